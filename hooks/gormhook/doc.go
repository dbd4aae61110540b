// Package gormhook turns GORM writes into realtime record events: each
// committed write of a watched record gets the record's next version in its
// own transaction, and its event, exactly as committed, is published after
// the commit; every node sharing the database publishes a record's events
// in version order, each once, through outages and crashes.
//
//	db, _ := gorm.Open(sqlite.Open("app.db?_pragma=busy_timeout(5000)&_txlock=immediate"), &gorm.Config{})
//	hook := gormhook.New(rt, gormhook.Watch(&Post{}, "posts"))
//	err := db.Use(hook)      // creates realtime_versions and realtime_outbox when missing
//	defer hook.Close(ctx)    // stops the outbox drainer
//
// Install the hook right after gorm.Open, before deriving sessions from db:
// sessions copy the connection pool the hook wraps. SQLite, PostgreSQL and
// MySQL/MariaDB are supported (the dialects of gorm.io/driver/sqlite or
// github.com/glebarez/sqlite, gorm.io/driver/postgres, gorm.io/driver/mysql);
// db.Use refuses others.
//
// # Events
//
// For the models registered with Watch (other models are ignored):
//
//   - Create, batch Create, CreateInBatches, Save of a new record, and the
//     upserts of Save on a slice: snapshot.
//   - Save, Updates, Update, UpdateColumn(s): changed, with the whole record
//     after the update.
//   - Delete, soft delete included (a soft-deleted record is gone for the
//     app's GET handler): deleted. The hook reads the rows before deleting
//     them (one SELECT in the delete's transaction, FOR UPDATE on PostgreSQL
//     and MySQL) and publishes each as the event's Prior: never sent to
//     subscribers, it is what the app's Authorizer sees, so a deletion
//     reaches only those who could see the record (a private record's
//     deletion stays private).
//
// A transaction publishes one event per record it wrote, however many
// times it wrote it: snapshot if the transaction created it, changed
// otherwise, deleted when the record is gone at commit (deleted, or hidden
// by the default scope: the GET handler answers 404).
//
// A record's ID is its primary key formatted with %v (pointers followed);
// the fields of a composite key are joined with "," in the model's field
// order. Its tenant is realtime.TenantFrom of the statement's context (write
// with db.WithContext(realtime.WithTenant(ctx, tenant))), or what the
// WithTenant option reads from the record.
//
// The record an event carries is read inside the write's transaction,
// right before its COMMIT and after its version is taken (below), by
// primary key, through the same GORM query path the app's GET handler uses
// (default scope, query callbacks, AfterFind): the event carries exactly the
// JSON the handler marshals (encoding/json), and the ETag the handler sends
// (Publisher's ETag when it has one, as *realtime.Plugin does: the record's
// realtime.ETagger, else Config.ETag over that JSON; else the record's
// ETagger, else realtime.DefaultETag). On MySQL that read is a locking one
// (FOR UPDATE): under REPEATABLE READ a plain read would return the
// transaction's snapshot, older than a version committed since for a row it
// named without changing it. WithReload(false) publishes the
// in-memory struct of the write instead (records written by condition are
// always read).
//
// # Writes by condition
//
// When an update or delete has conditions (db.Where(…).Updates(map),
// Delete(&Post{}, "title = ?", t), Model(&Post{}).Where(…).Update(…)), or its
// model does not carry every primary key, the hook first selects the primary
// keys of the rows it is about to write: same WHERE, same model, same
// soft-delete scope (Unscoped included), same connection and transaction.
// Those records get their events. When there are more than WithMaxAffected
// (default 1000), when the keys cannot be selected, when the write has a
// LIMIT, or when a watched table is written without its model
// (db.Table("posts") with a map), the collection is resynced instead (a
// resync row, unversioned): never silence. Raw SQL (db.Exec) is not seen;
// call Resync yourself.
//
// The keys are selected in the write's transaction. Under READ COMMITTED a
// row inserted by another transaction between that select and the write can
// still be written without being named. With SkipDefaultTransaction the
// select and the write are separate statements.
//
// # Versions
//
// Every event of a watched record carries realtime.Publication.Version: 1,
// 2, 3, … consecutive per record, in commit order, and
// realtime.Publication.PrevETag: the ETag of the version before it. The
// table realtime_versions (OutboxConfig.VersionTable) holds each record's
// last version: ref (the primary key: the hex SHA-256 of the collection
// and the ID, a fixed-width key every database indexes whatever the names'
// lengths), collection, record_id, version, and etag (that version's ETag,
// written by the same transaction once the record is read: one UPDATE per
// transaction). With PrevETag a subscriber that got a version as a
// snapshot resumes exactly from the next event; tables of an earlier
// layout get the column when the hook starts. Right before the COMMIT, the
// hook upserts the rows of the records the transaction wrote (version =
// version + 1, created at 1; INSERT … ON CONFLICT … RETURNING on SQLite and
// PostgreSQL, INSERT … ON DUPLICATE KEY UPDATE then SELECT on MySQL), in
// ref order. The upsert locks the row until the transaction ends: a second
// transaction writing the same record waits there for the first to commit
// and then reads its value, so versions follow commit order, under READ
// COMMITTED (PostgreSQL) and REPEATABLE READ (MySQL) alike; SQLite has one
// writer at a time. The record is read after that lock is taken, so each
// version carries the state its transaction committed, which includes every
// earlier version.
//
// A rolled back transaction, or a savepoint rolled back (GORM's nested
// transactions), takes no version. Rows are never deleted: a record deleted
// (version n, deleted) and created again continues at n+1.
//
// A record is a row of a watched table: its version is kept per collection
// and ID, the tenant is not part of the key (WithTenant reads the tenant
// from the record, which is read only once the version is taken). A row
// written under several tenants would make each tenant's stream skip
// versions.
//
// A model implementing realtime.Versioner is not asked for its version: an
// app's version column moves per statement, not per transaction, is not
// bumped by a delete, and restarts when a record is created again, where
// the broker needs one step per committed event. The hook sets
// Publication.Version itself. The plugin's snapshots must use the same
// numbering: give it Loader's VersionedRecord.
//
// # The outbox
//
// Every hook keeps a transactional outbox (OutboxConfig.Table, default
// realtime_outbox), on one node as on many: the order and the exactness of
// the events come from the rows committed with the writes, so there is one
// code path, and an outage or a crash between a commit and its publish
// loses nothing on a single node either. WithOutbox only tunes it. It holds
// one row per event, written in the write's transaction
// with its version, holding the event exactly as committed: id
// (autoincrement), ref, tenant, collection, record_id, version, event
// (snapshot, changed, deleted, or resync for a collection), etag, data (the
// record's JSON; for deleted the row before the delete, the event's Prior),
// created_at, claimed_at, claimed_by, refused_at. db.Use creates both tables
// when missing; an outbox of an earlier layout is refused.
//
// At write: each statement on a watched model queues its records' changes
// on its transaction (nothing is written yet; a rollback to a savepoint
// drops the changes queued since).
//
// At commit (hookTx.Commit, inside the caller's transaction): the versions
// are taken, the records read and the rows inserted (one INSERT per 200),
// then the database commits. When any of that fails the transaction is
// rolled back and the commit fails with the error: a committed write always
// has its events. Then the committing goroutine publishes the rows, in
// order, and deletes those published (one DELETE). The publisher drops a
// version it already has (a duplicate) and refuses one whose predecessor it
// has not got (realtime.ErrOutOfOrder): the predecessor was committed just
// before, usually by a goroutine or node still publishing it, so a refused
// row is tried again for about a quarter of a second, then left; at once
// when an earlier version of the record has been waiting in the outbox for
// longer than Grace (a backlog the drainer publishes first). A row that
// cannot be published now (the publisher down, refused, failed) stays for
// the drainer; while the publisher reports itself down (Health) the commit
// does not even try.
//
// A version above 1 is published with realtime.Publication.RequireLast:
// when the publisher's engine does not know the record's last version (it
// restarted empty, or forgot the record), it would take any version as the
// first, and an earlier version still in the outbox, published later,
// would be dropped as a duplicate (the record's subscribers would see a
// jump and resync). So on realtime.ErrLastUnknown the row is refused while
// an earlier version of its record is in the outbox (retried, or left to
// the drainer, like a row refused as out of order), and published again
// without RequireLast when none is: versions are taken under the record's
// version row lock, in commit order, so the versions before a committed
// one are committed too, and none in the outbox means all were published. A COMMIT that fails with an unknown outcome (a
// connection lost) publishes nothing: if it did commit, the drainer
// publishes its rows.
//
// A write outside any transaction (SkipDefaultTransaction) is committed
// when the hook sees it: its versions and rows are taken in a transaction
// of their own right after it, then published. That is not atomic with the
// write: a crash in between loses its events, and if that transaction
// fails the hook resyncs the collections instead.
//
// The drainer, a goroutine started by db.Use and stopped by Close, wakes
// every Interval (default 1s) and claims up to Batch rows older than Grace
// (default 2s: younger rows are left to the process that committed them),
// with the younger rows of their records (rows their committers left
// because of that backlog: they follow it at once rather than a Grace
// later, while the database already has them), and, once a record's rows
// are published, the rows of that record committed during the drain (their
// committers saw the backlog and left them to it).
//
// db.Use also registers the hook with a Publisher that takes it
// (realtime.Plugin.AddPendingEvents; the hook implements
// realtime.PendingEvents): a client reconnecting from a version the
// engine no longer buffers (it restarted empty) while the next version is
// in the outbox (a row whose prev_etag is the client's ETag) waits for it
// up to realtime.Config.ResumeWait, rather than resync.
// A claim is one UPDATE setting claimed_by and claimed_at on the rows not
// claimed within ClaimTTL (default 5s); the database re-checks that per
// row under its write lock, so two drainers do not both work on a row, and
// the claims of a process that dies expire. Claims only spare work: a row
// published twice (a process that published and died before deleting it,
// a claim that expired under a slow drain) is a duplicate the publisher
// drops. The drainer publishes each record's rows in version order,
// exactly as committed, and stops at the first that cannot be published
// (the later ones would be refused). Published rows are deleted; a row the
// publisher refuses as invalid (realtime.ErrBadRequest: it can never be
// published) is deleted and logged; the others are given back and tried
// at the next drain, but for a row failing for another reason, which stays
// claimed (with its record's later rows) until its claim expires. While
// the publisher is down the drainer probes with one row per Interval.
//
// Gaps: a row refused as out of order at every drain for GapAfter (default
// 10s, counted from refused_at) while no earlier version of its record is
// left in the outbox has a predecessor that can never be published (the
// broker lost it, or its row was removed by hand): it is published with
// realtime.Publication.Gap, and the record's subscribers are resynced
// before it. An earlier version still in the outbox is always waited for.
//
// # What is atomic
//
// A write in a transaction (GORM's default transaction around each write,
// db.Transaction, db.Begin), its versions and its outbox rows: all commit
// or none. A commit during an outage, or a crash right after the commit,
// leaves rows that are drained. Not atomic: a write outside any transaction
// (above), and raw SQL (never seen).
//
// # What a subscriber sees after an outage
//
// The writes committed during the outage (the database is the source of
// truth: they commit as usual) have their rows; once the publisher is back,
// the drainers publish every version of every record in order, exactly as
// committed (no intermediate version merged into a later one, a record
// created during the outage gets its snapshot, a deleted its Prior), each
// once, within about Interval + Grace of the publisher's return. Commits
// made meanwhile are refused until the record's backlog is out, and drained
// right after it. A subscriber that missed events while its stream was
// down resumes from its Last-Event-ID (or gets resync) as PROTOCOL.md says.
//
// # The loader
//
// Hook.Loader wraps the app's load function into a realtime.RecordLoader
// that reads the record and its version in one read-only REPEATABLE READ
// transaction (a plain read-only one on SQLite): the plugin learns which
// version a snapshot is (realtime.VersionedRecord) and never sends an event
// older than it.
//
// # How "after commit" works
//
// GORM v1.31 has no after-commit hook, and a callback placed after
// gorm:commit_or_rollback_transaction runs before the caller's
// db.Transaction commits. So the hook follows transactions at the connection
// pool instead:
//
//   - Initialize wraps db's ConnPool (for PrepareStmt, the pool inside the
//     *gorm.PreparedStmtDB). GORM begins every transaction through the pool's
//     BeginTx (db.Transaction, db.Begin, the default transaction of each
//     write, CreateInBatches' transaction), so each one is a *hookTx, which
//     GORM then uses as the statement's ConnPool and calls Commit or Rollback
//     on.
//   - A callback after each write computes the write's changes and queues
//     them on the *hookTx the statement runs in (found through
//     db.Statement.ConnPool, also behind a *gorm.PreparedStmtTX).
//   - hookTx.Commit records the changes in the transaction, commits, and
//     publishes (above). Rollback drops them.
//   - Nested transactions are savepoints inside the outermost transaction.
//     The hookTx sees the SAVEPOINT, ROLLBACK TO SAVEPOINT and RELEASE
//     statements GORM's dialects execute on it, and a rollback to a savepoint
//     drops the changes queued since. So an inner success inside an outer
//     rollback emits nothing, and an outer commit emits everything its
//     surviving inner transactions wrote.
//
// A write to a watched model inside a transaction that was not begun through
// a wrapped pool (one begun on a session derived before db.Use, or inside
// db.Connection) cannot be followed: it fails with ErrUnmanagedTx instead of
// publishing too early or never. Single writes on such sessions and inside
// db.Connection work: the hook wraps their pool for the write.
//
// Publishing runs synchronously inside Commit, after the database commit
// (the Publisher should be fast, and must not write watched models itself);
// its failures cannot reach the caller any more and are logged (WithLogger),
// with the collection, ID, event, version and tenant, never a credential
// nor the record; an outage is logged once, not once per event.
//
// # Costs
//
// Per transaction writing watched records, inside it: one upsert of the
// versions rows (per 250 records; MySQL adds a SELECT), one SELECT of the
// records (per model and 500 keys: the read that used to follow the
// commit), one INSERT of the outbox rows (per 200); after it, the publishes
// and one DELETE of the published rows. Each version row stays locked from
// the upsert to the COMMIT: concurrent writers of one record are serialized
// there (they were already, on the record's row). Storage: one versions row
// per record ever written (deleted records included), and outbox rows only
// while they wait. Idle, the drainer runs one SELECT of ids per Interval.
// Transactions that write no watched model cost nothing more.
//
// # Operations
//
// With SQLite the drainer is another writer on the file: use a busy timeout
// (and, for transactions that read before they write, _txlock=immediate).
// created_at, claimed_at and refused_at are the instances' clocks in UTC:
// keep Grace, ClaimTTL and GapAfter above their skew. Restoring the
// database from a backup takes versions back: versions at or below what the
// broker has are dropped as duplicates, so clear the broker's record streams
// (or restart it empty) with the restore.
package gormhook
