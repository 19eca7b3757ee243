//! Group commit for [`SqliteStore::submit`](super::SqliteStore): one writer
//! thread per store takes every decision queued, writes them in one
//! transaction with one fsync and answers each caller after the commit.
//!
//! Why a thread of its own: a caller waits for its answer on a channel, so
//! an async delivery holds no thread while the commit is fsynced, and one
//! commit wakes exactly the callers it carried. (The design before, a
//! blocking thread per caller sleeping on one condition variable, spent
//! most of its time switching between those threads.) While the writer is
//! in fsync the queue fills, so the busier the store, the larger a batch.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, params};

use super::{SELECT_DECISION, begin, sql_error};
use crate::findings::stored::decided_verdict;
use crate::findings::{FindingId, Queued, Recorded, StoreError, action_str, now_ms};

/// Most decisions in one transaction, so one batch never keeps the
/// connection from the store's other calls for long.
const MAX_BATCH: usize = 512;

/// Starts the writer of the store at `path`; it ends when every sender of
/// the returned queue is gone (the store was dropped).
pub(super) fn start(
    conn: Arc<Mutex<Connection>>,
    path: Arc<str>,
) -> Result<Sender<Queued>, StoreError> {
    let (queue, batches) = mpsc::channel();
    let name = path.clone();
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || run(&conn, &name, &batches))
        .map_err(|e| StoreError::GroupCommit {
            path,
            message: format!("cannot start the writer thread: {e}"),
        })?;
    Ok(queue)
}

fn run(conn: &Mutex<Connection>, path: &Arc<str>, queue: &Receiver<Queued>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let results = {
            // A panic while holding the lock dropped its transaction
            // (rolled back): the connection is still sound.
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            write_batch(&mut conn, path, &batch)
        };
        for (pending, result) in batch.into_iter().zip(results) {
            // A caller that went away needs no answer.
            let _ = pending.reply.send(result);
        }
    }
}

/// Writes `batch` in one transaction and commits once; the results are in
/// `batch` order. A decision that fails to write must not undo the others:
/// then the batch is written again with a savepoint per decision. (Not
/// always: `SAVEPOINT` and `RELEASE` are two more statements per decision,
/// and failures are rare.)
fn write_batch(
    conn: &mut Connection,
    path: &Arc<str>,
    batch: &[Queued],
) -> Vec<Result<Recorded, StoreError>> {
    let fail_all = |e: &dyn std::fmt::Display| {
        batch
            .iter()
            .map(|_| {
                Err(StoreError::GroupCommit {
                    path: path.clone(),
                    message: e.to_string(),
                })
            })
            .collect()
    };
    let sql = |source| sql_error(path, source);
    let tx = match begin(path, conn) {
        Ok(tx) => tx,
        Err(e) => return fail_all(&e),
    };
    // Most deliveries were never undecided: when no retry budget is kept
    // at all (read under the write lock, so no process adds one meanwhile)
    // the batch skips forgetting one per decision.
    let budgets = match any_undecided(&tx) {
        Ok(budgets) => budgets,
        Err(e) => return fail_all(&sql(e)),
    };
    let written: Result<Vec<Recorded>, StoreError> = batch
        .iter()
        .map(|pending| write_one(&tx, path, pending, budgets))
        .collect();
    match written {
        Ok(results) => {
            return match tx.commit() {
                Ok(()) => results.into_iter().map(Ok).collect(),
                Err(e) => fail_all(&e),
            };
        }
        // Alone, its failure is the answer.
        Err(e) if batch.len() == 1 => return vec![Err(e)],
        Err(_) => drop(tx),
    }
    let mut tx = match begin(path, conn) {
        Ok(tx) => tx,
        Err(e) => return fail_all(&e),
    };
    let mut results = Vec::with_capacity(batch.len());
    for pending in batch {
        let result = match tx.savepoint() {
            Err(e) => Err(sql(e)),
            Ok(mut sp) => {
                let written = write_one(&sp, path, pending, true);
                match &written {
                    Ok(_) => sp.commit().map_err(sql).and(written),
                    Err(_) => {
                        // Undo this decision only.
                        let _ = sp.rollback();
                        written
                    }
                }
            }
        };
        results.push(result);
    }
    match tx.commit() {
        Ok(()) => results,
        Err(e) => fail_all(&e),
    }
}

/// Whether any undecided retry budget is kept.
fn any_undecided(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM undecided)")?
        .query_row([], |r| r.get(0))
}

/// Writes one decision; `budgets`: whether an undecided retry budget may
/// exist to forget.
fn write_one(
    conn: &Connection,
    path: &Arc<str>,
    pending: &Queued,
    budgets: bool,
) -> Result<Recorded, StoreError> {
    let sql = |source| sql_error(path, source);
    let d = &pending.decision;
    let [source, endpoint, event_id] = d.key.columns();
    let verdict = d.verdict.as_str();
    let inserted = conn
        .prepare_cached(
            "INSERT INTO decisions (source, endpoint, event_id, received_at_ms, verdict) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(params![
                source,
                endpoint,
                event_id,
                d.received_at_ms,
                verdict
            ])
        })
        .map_err(sql)?;
    if inserted == 0 {
        let first: String = conn
            .prepare_cached(SELECT_DECISION)
            .and_then(|mut s| s.query_row(params![source, endpoint, event_id], |r| r.get(0)))
            .map_err(sql)?;
        let verdict = decided_verdict(path, &d.key, &first)?;
        return Ok(Recorded::Duplicate { verdict });
    }
    // Decided: the retry budget it may have used is spent.
    if budgets {
        conn.prepare_cached(
            "DELETE FROM undecided WHERE source = ?1 AND endpoint = ?2 AND event_id = ?3",
        )
        .and_then(|mut s| s.execute(params![source, endpoint, event_id]))
        .map_err(sql)?;
    }
    let Some(evidence) = &pending.evidence else {
        return Ok(Recorded::New { finding: None });
    };
    conn.prepare_cached(
        "INSERT INTO findings (created_at_ms, received_at_ms, source, endpoint, event_id, \
         action, repository, digest, tag, verdict, reason, evidence, \
         manifest_commit, index_generation, excepted_by) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )
    .and_then(|mut s| {
        s.execute(params![
            now_ms(),
            d.received_at_ms,
            source,
            endpoint,
            event_id,
            d.action.map(action_str),
            d.repository.as_ref().map(|r| r.as_str()),
            d.digest.as_ref().map(|x| x.to_string()),
            d.tag.as_ref().map(|t| t.as_str()),
            verdict,
            d.reason,
            evidence,
            d.manifest_commit,
            d.index_generation as i64,
            d.excepted_by,
        ])
    })
    .map_err(sql)?;
    Ok(Recorded::New {
        finding: Some(FindingId(conn.last_insert_rowid())),
    })
}
