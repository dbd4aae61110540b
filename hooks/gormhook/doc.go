// Package gormhook turns GORM writes into realtime record events, emitted
// only after the outermost transaction commits.
//
//	db, _ := gorm.Open(sqlite.Open("app.db"), &gorm.Config{})
//	err := db.Use(gormhook.New(rt, gormhook.Watch(&Post{}, "posts")))
//
// Install the hook right after gorm.Open, before deriving sessions from db:
// sessions copy the connection pool the hook wraps.
//
// # Events
//
// For the models registered with Watch (other models are ignored):
//
//   - Create, batch Create, CreateInBatches, Save of a new record, and the
//     upserts of Save on a slice: one snapshot per record.
//   - Save, Updates, Update, UpdateColumn(s): one changed per record, with
//     the whole record after the update.
//   - Delete, soft delete included (a soft-deleted record is gone for the
//     app's GET handler): one deleted per record. The hook reads the rows
//     before deleting them (one SELECT in the delete's transaction) and
//     publishes each as the event's Prior: never sent to subscribers, it is
//     what the app's Authorizer sees, so a deletion reaches only those who
//     could see the record (a private record's deletion stays private).
//
// A record's ID is its primary key formatted with %v (pointers followed);
// the fields of a composite key are joined with "," in the model's field
// order. Its tenant is realtime.TenantFrom of the statement's context (write
// with db.WithContext(realtime.WithTenant(ctx, tenant))), or what the
// WithTenant option reads from the record.
//
// By default every created or updated record is read again by primary key
// after commit, outside the finished transaction, through the same GORM
// query path the app's GET handler uses (default scope, query callbacks,
// AfterFind): the event carries exactly the JSON the handler marshals, so the
// default ETag (a hash of that JSON) is the one the handler sends. A record
// written several times in one transaction is published once, at its first
// event, with its committed version; one that is gone by then (deleted later
// in the transaction, hidden by the default scope) is not published.
// WithReload(false) publishes the in-memory struct instead.
//
// # Writes by condition
//
// When an update or delete has conditions (db.Where(…).Updates(map),
// Delete(&Post{}, "title = ?", t), Model(&Post{}).Where(…).Update(…)), or its
// model does not carry every primary key, the hook first selects the primary
// keys of the rows it is about to write: same WHERE, same model, same
// soft-delete scope (Unscoped included), same connection and transaction.
// After commit it publishes those records' events. When there are more than
// WithMaxAffected (default 1000), when the keys cannot be selected, when the
// write has a LIMIT, or when a watched table is written without its model
// (db.Table("posts") with a map), it calls Resync on the collection instead:
// never silence. Raw SQL (db.Exec) is not seen; call Resync yourself.
//
// The keys are selected in the write's transaction. Under READ COMMITTED a
// row inserted by another transaction between that select and the write can
// still be written without being named. With SkipDefaultTransaction the
// select and the write are separate statements.
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
//   - A callback after each write computes the write's events and appends them
//     to the *hookTx the statement runs in (found through
//     db.Statement.ConnPool, also behind a *gorm.PreparedStmtTX).
//   - hookTx.Commit commits the database transaction and, only when that
//     succeeds, reloads and publishes the queued events in order, on the
//     committing goroutine. Rollback drops them. A failed COMMIT publishes
//     no event but resyncs the collections it wrote: its outcome may be
//     unknown (a connection lost during COMMIT).
//   - Nested transactions are savepoints inside the outermost transaction.
//     The hookTx sees the SAVEPOINT, ROLLBACK TO SAVEPOINT and RELEASE
//     statements GORM's dialects execute on it, and a rollback to a savepoint
//     drops the events queued since. So an inner success inside an outer
//     rollback emits nothing, and an outer commit emits everything its
//     surviving inner transactions wrote, in order.
//   - A write outside any transaction (SkipDefaultTransaction) is committed
//     when it returns: its events are published at once.
//
// A write to a watched model inside a transaction that was not begun through
// a wrapped pool (one begun on a session derived before db.Use, or inside
// db.Connection) cannot be followed: it fails with ErrUnmanagedTx instead of
// publishing too early or never. Single writes on such sessions and inside
// db.Connection work: the hook wraps their pool for the write.
//
// # Concurrent transactions
//
// Two transactions writing one record may commit in one order and reach
// their reload and publish in another. Each commit takes a number right
// after it commits, before reloading; a record is not published by a commit
// numbered below one that has already published it (that commit reloaded
// later, so its version is at least as new). Subscribers never see an older
// version, or a changed, after a newer one or after the record's deleted.
// With WithReload(false) the numbers still order the events, but the
// in-memory structs are only as new as the app made them.
//
// Publishing runs synchronously inside Commit, after the database commit
// (the Publisher should be fast, and must not write watched models itself);
// its failures cannot reach the caller any more and are logged (WithLogger),
// with the collection, ID, event and tenant, never a credential. Without the
// outbox (below) an event whose publish fails is lost, and so are the events
// of a process that dies between its commit and its publish.
//
// # Outbox
//
// WithOutbox(gormhook.OutboxConfig{}) makes the events durable: those that
// cannot reach the publisher at commit time (the plugin's Broker, Redis,
// unreachable: Publish fails with realtime.ErrUnavailable) are delivered,
// as the records' current state, once it is back, by this instance or by
// any other instance sharing the database.
//
//   - db.Use creates the outbox table when missing (default
//     "realtime_outbox"): id (autoincrement), tenant, collection,
//     record_key (the JSON array of the record's primary key values; empty
//     for a collection resync), record_id (the event's ID), created_at,
//     claimed_at, claimed_by.
//   - Each write to a watched model inserts one row per event it queues,
//     in one INSERT per statement, on the write's connection: inside a
//     transaction the rows commit or roll back with the write, and a
//     rollback to a savepoint removes them with the events. When that
//     INSERT fails the write fails too (return its error and the
//     transaction rolls back): a committed write always has its rows.
//   - After commit the hook publishes as without the outbox, then deletes
//     the rows of the events it published, in one DELETE. Rows whose
//     publish (or resync) failed stay; failures are then logged once per
//     outage, not once per event.
//   - A drainer goroutine, started by db.Use and stopped by Hook.Close,
//     wakes every Interval and claims up to Batch rows older than Grace
//     (younger ones are left to the process that wrote them). A claim is
//     one UPDATE setting claimed_by and claimed_at on the rows not claimed
//     within ClaimTTL; the database re-checks that condition per row under
//     its write lock, so two instances never both own a row, and the claims
//     of an instance that dies expire. The drainer reloads each record by
//     its key, as the flush does (default scope, query callbacks), and
//     publishes it as changed, or as deleted when it is gone or hidden;
//     resync rows resync their collection. It deletes the rows it
//     published. Failures leave the rows: an outage (an error wrapping
//     realtime.ErrUnavailable or ErrClosed, or a context error) stops the
//     drain, which then probes with one row per Interval until the
//     publisher is back; any other failure leaves its row claimed, tried
//     again when the claim expires, without holding up the others.
//
// What is atomic: a write in a transaction (GORM's default transaction
// around each write, db.Transaction, db.Begin) and its rows. A commit during
// an outage, or a crash after the commit, leaves rows that are drained. Not
// atomic: a write outside any transaction (SkipDefaultTransaction) is
// committed when the hook sees it; its rows are written by a statement of
// their own right after it, before publishing, so an outage loses nothing
// but a crash between the write and that INSERT loses its events, as
// without the outbox (the hook does not open transactions the app turned
// off). Raw SQL (db.Exec) is never seen. A COMMIT that fails resyncs the
// collections as before; if it did commit, its rows are drained.
//
// What a subscriber sees after an outage: for each record written during
// it, a changed carrying the record as stored when the drainer runs (not the
// intermediate versions, and a changed even for a record created during the
// outage), or a deleted when the record is gone, or a resync of the
// collection. A drained deleted has no Prior (the row before the delete is
// not stored): the Authorizer decides on the deletion without the record.
// An event may be published twice (a process dies between its publish and
// the DELETE, or a flush takes longer than Grace); the second carries the
// current state again, which converges.
//
// Order: the drainer numbers each batch in the process's sequencer like a
// flush, after the rows committed and before it reloads; it does not
// publish a record that a later flush of the process has published, and a
// later flush's version replaces its own. Another process's flush is not
// ordered by this sequencer: it may publish a newer version between the
// drainer's read and its publish. So, after publishing, the drainer reads
// its records once more and publishes again those that changed (that flush
// committed before this read): the last version a subscriber gets is the
// stored one, unless the race repeats itself.
//
// The tenant of a row is the context's tenant at write time, or with
// WithTenant the one its function reads from the record the hook holds (a
// deleted record's row before the delete, the in-memory struct with
// WithReload(false)); a created or updated record is not read in the
// transaction, so its row has no tenant: the drainer takes it from the
// reloaded record, and when that record is gone publishes nothing for the
// row (the delete that removed it has its own event and row). The drainer
// reloads and publishes with a context carrying only the row's tenant
// (realtime.WithTenant): a default scope or callback reading other context
// values does not get them. created_at and claimed_at are
// the instances' clocks in UTC: keep Grace and ClaimTTL above their skew.
// When several models are watched as one collection, the drainer reloads
// rows with the first one.
//
// The cost: one row per written record, inserted by one INSERT per write
// statement (per 200 records) inside the transaction, and one DELETE after
// commit; when idle,
// the drainer's one SELECT of ids per Interval. With SQLite the drainer is
// another writer on the file: use a busy timeout (and, for transactions that
// read before they write, _txlock=immediate).
package gormhook
