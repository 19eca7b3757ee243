//! Group commit for [`PostgresStore`](super::PostgresStore)'s `submit`: callers
//! queue their decisions; a writer takes everything queued, writes it with
//! a few multi-row statements in one transaction and answers every caller
//! after the commit. While the writers are busy the queue fills, so the
//! busier the store, the more deliveries share one commit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{Semaphore, mpsc};

use super::{pg_error, pool_error};
use crate::findings::stored::decided_verdict;
use crate::findings::{
    DedupeKey, FindingId, Queued, Recorded, StoreError, WriterQueue, action_str, now_ms,
};

/// Most decisions in one transaction.
const MAX_BATCH: usize = 512;

/// Takes batches off `queue` while fewer than `writers` are being written,
/// until every sender is gone.
pub(super) async fn run(
    pool: Pool,
    name: Arc<str>,
    mut queue: mpsc::UnboundedReceiver<Queued>,
    writers: usize,
) {
    let permits = Arc::new(Semaphore::new(writers.max(1)));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::new();
        if queue.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let (pool, name) = (pool.clone(), name.clone());
        tokio::spawn(async move {
            let results = match write(&pool, &name, &batch).await {
                Ok(results) => results,
                Err(e) => batch
                    .iter()
                    .map(|_| Err(shared_failure(&name, &e)))
                    .collect(),
            };
            for (pending, result) in batch.into_iter().zip(results) {
                // A caller that went away needs no answer.
                let _ = pending.reply.send(result);
            }
            drop(permit);
        });
    }
}

/// What each caller of a failed batch is answered: an unavailable database
/// stays `Unavailable` (readiness and 503s key on it); anything else failed
/// the transaction they shared.
fn shared_failure(name: &Arc<str>, e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable { store, message } => StoreError::Unavailable {
            store: store.clone(),
            message: message.clone(),
        },
        StoreError::Postgres { message, .. } => StoreError::GroupCommit {
            path: name.clone(),
            message: message.clone(),
        },
        other => StoreError::GroupCommit {
            path: name.clone(),
            message: other.to_string(),
        },
    }
}

impl WriterQueue for mpsc::UnboundedSender<Queued> {
    fn hand_over(&self, pending: Queued) {
        let _ = self.send(pending);
    }
}

/// A [`DedupeKey`] as its columns read back.
type Key = [String; 3];

fn key(k: &DedupeKey) -> Key {
    k.columns().map(str::to_owned)
}

/// Inserts the batch's new decisions (the first of each key; dedupe by the
/// unique key, so a decision another replica committed first is a
/// duplicate), forgets their undecided budgets, inserts the findings (and,
/// with [`DELIVERIES`], their deliveries for every known sink unless
/// excepted), and commits. Nothing is written
/// when it fails.
const INSERT: &str = "\
WITH k AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[],
                       $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                       $11::text[], $12::text[], $13::int8[], $14::text[])
    AS k(source, endpoint, event_id, received_at_ms, verdict, action, repository, digest,
         tag, reason, evidence, manifest_commit, index_generation, excepted_by)
),
ins AS (
  INSERT INTO decisions (source, endpoint, event_id, received_at_ms, verdict)
  SELECT source, endpoint, event_id, received_at_ms, verdict FROM k
  ON CONFLICT DO NOTHING
  RETURNING source, endpoint, event_id
),
forgotten AS (
  DELETE FROM undecided u USING ins
  WHERE u.source = ins.source AND u.endpoint = ins.endpoint AND u.event_id = ins.event_id
),
f AS (
  INSERT INTO findings (created_at_ms, received_at_ms, source, endpoint, event_id, action,
                        repository, digest, tag, verdict, reason, evidence, manifest_commit,
                        index_generation, excepted_by)
  SELECT $15, k.received_at_ms, k.source, k.endpoint, k.event_id, k.action, k.repository,
         k.digest, k.tag, k.verdict, k.reason, k.evidence, k.manifest_commit, k.index_generation,
         k.excepted_by
  FROM k JOIN ins USING (source, endpoint, event_id)
  WHERE k.evidence IS NOT NULL
  ORDER BY k.source, k.endpoint, k.event_id
  RETURNING id, source, endpoint, event_id, excepted_by IS NULL AS owed
)
SELECT ins.source, ins.endpoint, ins.event_id, f.id, f.owed
FROM ins LEFT JOIN f USING (source, endpoint, event_id)";

/// Given only the findings owed to sinks (not excepted). A separate
/// statement, so that it reads `sinks` after the findings insert took its
/// table lock: a sink registering meanwhile either sees these
/// findings or is seen here (see `PostgresStore::register_sink`).
const DELIVERIES: &str = "\
INSERT INTO deliveries (finding, sink, state, attempts, next_attempt_ms)
SELECT f.id, s.sink, 'pending', 0, 0 FROM unnest($1::int8[]) AS f(id) CROSS JOIN sinks s
ON CONFLICT DO NOTHING";

const EXISTING: &str = "\
SELECT d.source, d.endpoint, d.event_id, d.verdict
FROM decisions d
JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(source, endpoint, event_id)
  USING (source, endpoint, event_id)";

async fn write(
    pool: &Pool,
    name: &Arc<str>,
    batch: &[Queued],
) -> Result<Vec<Result<Recorded, StoreError>>, StoreError> {
    // The first of each key is written; later ones in the batch are
    // duplicates of whatever it turns out to be.
    let mut leaders: Vec<usize> = Vec::with_capacity(batch.len());
    let mut seen = HashSet::with_capacity(batch.len());
    for (i, p) in batch.iter().enumerate() {
        if seen.insert(key(&p.decision.key)) {
            leaders.push(i);
        }
    }
    // One lock order for every writer: no deadlock between two batches
    // sharing keys.
    leaders.sort_by_cached_key(|&i| key(&batch[i].decision.key));

    let mut client = pool.get().await.map_err(|e| pool_error(name, e))?;
    let tx = client.transaction().await.map_err(|e| pg_error(name, e))?;
    let col = |f: &dyn Fn(&Queued) -> Option<String>| -> Vec<Option<String>> {
        leaders.iter().map(|&i| f(&batch[i])).collect()
    };
    let sources = col(&|p| Some(p.decision.key.source.as_str().to_owned()));
    let endpoints = col(&|p| Some(p.decision.key.endpoint.0.clone()));
    let ids = col(&|p| Some(p.decision.key.event_id.0.clone()));
    let received: Vec<i64> = leaders
        .iter()
        .map(|&i| batch[i].decision.received_at_ms)
        .collect();
    let verdicts = col(&|p| Some(p.decision.verdict.as_str().to_owned()));
    let actions = col(&|p| p.decision.action.map(|a| action_str(a).to_owned()));
    let repositories = col(&|p| {
        p.decision
            .repository
            .as_ref()
            .map(|r| r.as_str().to_owned())
    });
    let digests = col(&|p| p.decision.digest.as_ref().map(ToString::to_string));
    let tags = col(&|p| p.decision.tag.as_ref().map(|t| t.as_str().to_owned()));
    let reasons = col(&|p| Some(p.decision.reason.clone()));
    let evidence = col(&|p| p.evidence.clone());
    let commits = col(&|p| p.decision.manifest_commit.clone());
    let excepted = col(&|p| p.decision.excepted_by.clone());
    // Stored bit for bit as i64, as in SQLite.
    let generations: Vec<i64> = leaders
        .iter()
        .map(|&i| batch[i].decision.index_generation as i64)
        .collect();
    let statement = tx
        .prepare_cached(INSERT)
        .await
        .map_err(|e| pg_error(name, e))?;
    let rows = tx
        .query(
            &statement,
            &[
                &sources,
                &endpoints,
                &ids,
                &received,
                &verdicts,
                &actions,
                &repositories,
                &digests,
                &tags,
                &reasons,
                &evidence,
                &commits,
                &generations,
                &excepted,
                &now_ms(),
            ],
        )
        .await
        .map_err(|e| pg_error(name, e))?;
    let mut inserted: HashMap<Key, Option<i64>> = HashMap::with_capacity(rows.len());
    // Findings owed to sinks: an excepted one is kept but never delivered.
    let mut findings: Vec<i64> = Vec::with_capacity(rows.len());
    for row in rows {
        let id: Option<i64> = row.get(3);
        if let (Some(id), Some(true)) = (id, row.get::<_, Option<bool>>(4)) {
            findings.push(id);
        }
        inserted.insert([row.get(0), row.get(1), row.get(2)], id);
    }
    if !findings.is_empty() {
        let statement = tx
            .prepare_cached(DELIVERIES)
            .await
            .map_err(|e| pg_error(name, e))?;
        tx.execute(&statement, &[&findings])
            .await
            .map_err(|e| pg_error(name, e))?;
    }
    // Verdicts recorded before (by this or another process) of the keys
    // not inserted now. The insert waited for any conflicting transaction
    // to end, so this later statement sees its row.
    let others: Vec<Key> = leaders
        .iter()
        .map(|&i| key(&batch[i].decision.key))
        .filter(|k| !inserted.contains_key(k))
        .collect();
    let mut existing: HashMap<Key, String> = HashMap::with_capacity(others.len());
    if !others.is_empty() {
        let statement = tx
            .prepare_cached(EXISTING)
            .await
            .map_err(|e| pg_error(name, e))?;
        let (s, e, i): (Vec<&str>, Vec<&str>, Vec<&str>) = others
            .iter()
            .map(|[s, e, i]| (s.as_str(), e.as_str(), i.as_str()))
            .fold((vec![], vec![], vec![]), |mut acc, (s, e, i)| {
                acc.0.push(s);
                acc.1.push(e);
                acc.2.push(i);
                acc
            });
        for row in tx
            .query(&statement, &[&s, &e, &i])
            .await
            .map_err(|e| pg_error(name, e))?
        {
            existing.insert([row.get(0), row.get(1), row.get(2)], row.get(3));
        }
    }
    tx.commit().await.map_err(|e| pg_error(name, e))?;

    // Each caller's answer. A key new in this batch answers its first
    // caller `New` and the others `Duplicate` of its verdict.
    let mut answered: HashSet<Key> = HashSet::new();
    Ok(batch
        .iter()
        .map(|p| {
            let d = &p.decision;
            let k = key(&d.key);
            if let Some(finding) = inserted.get(&k) {
                if answered.insert(k.clone()) {
                    return Ok(Recorded::New {
                        finding: finding.map(FindingId),
                    });
                }
                let first = batch
                    .iter()
                    .find(|q| key(&q.decision.key) == k)
                    .map_or(d.verdict, |q| q.decision.verdict);
                return Ok(Recorded::Duplicate { verdict: first });
            }
            match existing.get(&k) {
                Some(v) => {
                    decided_verdict(name, &d.key, v).map(|verdict| Recorded::Duplicate { verdict })
                }
                // Pruned between the insert and the lookup: not recorded
                // now; the delivery comes back and is decided anew.
                None => Err(StoreError::GroupCommit {
                    path: name.clone(),
                    message: format!(
                        "event {}: its decision vanished while being recorded; try again",
                        d.key.event_id
                    ),
                }),
            }
        })
        .collect())
}
