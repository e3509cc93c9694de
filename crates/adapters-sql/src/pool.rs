//! The warm pool's slots, written once for both backends over a [`Dialect`].
//!
//! Instants are integer microseconds in both backends (the replica's clock passes them in);
//! rows are read back as text. A claim is one `UPDATE` of the oldest ready row: SQLite runs it
//! under its one write lock, PostgreSQL passes over rows another claim has locked
//! ([`Dialect::SKIP_LOCKED`]), so two claims never take one slot. A reservation counts and
//! inserts in one transaction under [`Dialect::WRITERS_LOCK`], so racing replicas never
//! reserve past the target.

use std::sync::Arc;

use async_trait::async_trait;
use sandkeeper_domain::{ContainerId, EngineName, SlotId, Timestamp};
use sandkeeper_ports::{PoolCounts, PoolSlot, PoolStore, SlotState, StoreError};

use crate::dialect::{Dialect, Statement, Value};

const COLUMNS: &str = "slot_id, fingerprint, state, container_id, \
     CAST(created_at AS TEXT), CAST(changed_at AS TEXT)";

/// The slots of one engine's pool in the store of dialect `D`.
pub(crate) struct SqlPool<D> {
    db: Arc<D>,
    engine: EngineName,
}

impl<D: Dialect> SqlPool<D> {
    pub(crate) fn new(db: Arc<D>, engine: &EngineName) -> Self {
        Self { db, engine: engine.clone() }
    }

    async fn changed(&self, statements: Vec<Statement>) -> Result<bool, StoreError> {
        let changed = self.db.execute(statements).await;
        Ok(changed.map_err(|error| self.db.store_error(error))? == 1)
    }

    async fn slots(&self, statement: Statement) -> Result<Vec<PoolSlot>, StoreError> {
        let rows = self.db.text_rows(statement).await.map_err(|e| self.db.store_error(e))?;
        rows.into_iter().map(slot_from_texts).collect()
    }
}

fn micros(at: Timestamp) -> Value {
    Value::Int(at.timestamp_micros())
}

fn slot_value(slot_id: SlotId) -> Value {
    Value::Text(slot_id.to_string())
}

fn unreadable(what: &str) -> StoreError {
    StoreError::Failed(format!("a sandbox_pool row could not be read: {what}").into())
}

fn slot_from_texts(columns: Vec<Option<String>>) -> Result<PoolSlot, StoreError> {
    let [slot_id, fingerprint, state, container_id, created_at, changed_at]: [Option<String>; 6] =
        columns.try_into().map_err(|_| unreadable("it has the wrong number of columns"))?;
    let text = |value: Option<String>, name: &str| {
        value.ok_or_else(|| unreadable(&format!("{name} is NULL")))
    };
    let instant = |value: Option<String>, name: &str| -> Result<Timestamp, StoreError> {
        let value = text(value, name)?;
        value
            .parse::<i64>()
            .ok()
            .and_then(chrono::DateTime::from_timestamp_micros)
            .ok_or_else(|| unreadable(&format!("{name} `{value}` is not an instant")))
    };
    let slot_id = text(slot_id, "slot_id")?;
    let state = text(state, "state")?;
    Ok(PoolSlot {
        slot_id: SlotId::parse(&slot_id).map_err(|error| unreadable(&error.to_string()))?,
        fingerprint: text(fingerprint, "fingerprint")?,
        state: SlotState::from_spelling(&state)
            .ok_or_else(|| unreadable(&format!("state `{state}` is unknown")))?,
        container_id: container_id
            .map(ContainerId::new)
            .transpose()
            .map_err(|error| unreadable(&error.to_string()))?,
        created_at: instant(created_at, "created_at")?,
        changed_at: instant(changed_at, "changed_at")?,
    })
}

#[async_trait]
impl<D: Dialect> PoolStore for SqlPool<D> {
    async fn reserve(
        &self,
        slot_id: SlotId,
        fingerprint: &str,
        target: u64,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let insert = Statement::new(
            "INSERT INTO sandbox_pool \
             (slot_id, engine, fingerprint, state, container_id, created_at, changed_at) \
             SELECT $1, $2, $3, 'starting', NULL, $4, $4 \
             WHERE (SELECT COUNT(*) FROM sandbox_pool WHERE engine = $2 AND fingerprint = $3 \
                    AND state IN ('starting', 'ready')) < $5",
        )
        .bind(slot_value(slot_id))
        .bind(Value::Text(self.engine.as_str().to_owned()))
        .bind(Value::Text(fingerprint.to_owned()))
        .bind(micros(now))
        .bind(Value::Int(i64::try_from(target).unwrap_or(i64::MAX)));
        let mut statements: Vec<Statement> =
            D::WRITERS_LOCK.map(Statement::new).into_iter().collect();
        statements.push(insert);
        self.changed(statements).await
    }

    async fn mark_ready(
        &self,
        slot_id: SlotId,
        container_id: &ContainerId,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.changed(vec![
            Statement::new(
                "UPDATE sandbox_pool SET state = 'ready', container_id = $2, changed_at = $3 \
                 WHERE slot_id = $1 AND state = 'starting'",
            )
            .bind(slot_value(slot_id))
            .bind(Value::Text(container_id.as_str().to_owned()))
            .bind(micros(now)),
        ])
        .await
    }

    async fn claim(
        &self,
        fingerprint: &str,
        now: Timestamp,
    ) -> Result<Option<PoolSlot>, StoreError> {
        let statement = Statement::new(format!(
            "UPDATE sandbox_pool SET state = 'claimed', changed_at = $3 \
             WHERE slot_id = (SELECT slot_id FROM sandbox_pool \
                 WHERE engine = $1 AND fingerprint = $2 AND state = 'ready' \
                 ORDER BY created_at, slot_id LIMIT 1{skip}) \
             AND state = 'ready' RETURNING {COLUMNS}",
            skip = D::SKIP_LOCKED,
        ))
        .bind(Value::Text(self.engine.as_str().to_owned()))
        .bind(Value::Text(fingerprint.to_owned()))
        .bind(micros(now));
        let row = self.db.texts(statement).await.map_err(|e| self.db.store_error(e))?;
        row.map(slot_from_texts).transpose()
    }

    async fn remove(&self, slot_id: SlotId, state: SlotState) -> Result<bool, StoreError> {
        self.changed(vec![
            Statement::new("DELETE FROM sandbox_pool WHERE slot_id = $1 AND state = $2")
                .bind(slot_value(slot_id))
                .bind(Value::Text(state.as_str().to_owned())),
        ])
        .await
    }

    async fn find_by_container(
        &self,
        container_id: &ContainerId,
    ) -> Result<Option<PoolSlot>, StoreError> {
        let statement = Statement::new(format!(
            "SELECT {COLUMNS} FROM sandbox_pool WHERE container_id = $1 AND engine = $2"
        ))
        .bind(Value::Text(container_id.as_str().to_owned()))
        .bind(Value::Text(self.engine.as_str().to_owned()));
        Ok(self.slots(statement).await?.into_iter().next())
    }

    async fn list(&self) -> Result<Vec<PoolSlot>, StoreError> {
        self.slots(
            Statement::new(format!(
                "SELECT {COLUMNS} FROM sandbox_pool WHERE engine = $1 \
                 ORDER BY created_at, slot_id"
            ))
            .bind(Value::Text(self.engine.as_str().to_owned())),
        )
        .await
    }

    async fn counts(&self, fingerprint: &str) -> Result<PoolCounts, StoreError> {
        let rows = self
            .db
            .text_rows(
                Statement::new(
                    "SELECT state, CAST(COUNT(*) AS TEXT) FROM sandbox_pool \
                     WHERE engine = $1 AND fingerprint = $2 GROUP BY state",
                )
                .bind(Value::Text(self.engine.as_str().to_owned()))
                .bind(Value::Text(fingerprint.to_owned())),
            )
            .await
            .map_err(|error| self.db.store_error(error))?;
        let mut counts = PoolCounts::default();
        for row in rows {
            let (state, count) = match row.as_slice() {
                [Some(state), Some(count)] => (state.as_str(), count.parse().unwrap_or(0)),
                _ => return Err(unreadable("a count of slots by state")),
            };
            match SlotState::from_spelling(state) {
                Some(SlotState::Starting) => counts.starting = count,
                Some(SlotState::Ready) => counts.ready = count,
                Some(SlotState::Claimed) => counts.claimed = count,
                None => return Err(unreadable(&format!("state `{state}` is unknown"))),
            }
        }
        Ok(counts)
    }
}
