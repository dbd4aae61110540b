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
// with the collection, ID, event and tenant, never a credential.
package gormhook
