//! The maintenance leases, written once for both backends over a [`Dialect`].
//!
//! Every instant is the database's own ([`Dialect::NOW`]): on PostgreSQL replicas whose clocks
//! disagree still agree on who holds a lease; on SQLite, one host, it is that host's clock.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sandkeeper_ports::{LeaseRequest, MaintenanceLeases, StoreError};

use crate::dialect::{Dialect, Statement, Value};

/// Named leases in the store of dialect `D`.
pub(crate) struct SqlLeases<D> {
    pub(crate) db: Arc<D>,
}

impl<D: Dialect> SqlLeases<D> {
    pub(crate) fn new(db: Arc<D>) -> Self {
        Self { db }
    }

    async fn changed(&self, statement: Statement) -> Result<bool, StoreError> {
        let changed = self.db.execute(vec![statement]).await;
        Ok(changed.map_err(|error| self.db.store_error(error))? == 1)
    }

    /// `sql` with `{now}` replaced by the database's clock.
    fn sql(sql: &str) -> String {
        sql.replace("{now}", D::NOW)
    }

    fn by_holder(sql: &str, name: &str, holder: &str) -> Statement {
        Statement::new(Self::sql(sql))
            .bind(Value::Text(name.to_owned()))
            .bind(Value::Text(holder.to_owned()))
    }
}

#[async_trait]
impl<D: Dialect> MaintenanceLeases for SqlLeases<D> {
    async fn try_acquire(&self, request: &LeaseRequest<'_>) -> Result<bool, StoreError> {
        let name = || Value::Text(request.name.to_owned());
        // Read first: while the lease is held or was completed recently, nobody writes.
        let gate = Statement::new(Self::sql(
            "SELECT lease_expires_at > {now}, \
             coalesce(last_completed_at > {now} - $2, false) \
             FROM maintenance_leases WHERE name = $1",
        ))
        .bind(name())
        .bind(Value::Span(request.min_interval));
        match self.db.flags(gate).await.map_err(|error| self.db.store_error(error))? {
            Some(flags) => {
                if flags.iter().any(|&flag| flag) {
                    return Ok(false);
                }
            }
            None => {
                let create = Statement::new(Self::sql(
                    "INSERT INTO maintenance_leases \
                     (name, holder, lease_expires_at, last_completed_at) \
                     VALUES ($1, NULL, {now}, NULL) ON CONFLICT (name) DO NOTHING",
                ))
                .bind(name());
                self.db.execute(vec![create]).await.map_err(|error| self.db.store_error(error))?;
            }
        }
        // One statement that wins only while the lease is free: SQLite runs writes one at a
        // time; PostgreSQL, under READ COMMITTED, waits for a concurrent winner's update and
        // re-checks the condition against its row. Either way exactly one racer changes it.
        let take = Statement::new(Self::sql(
            "UPDATE maintenance_leases SET holder = $2, lease_expires_at = {now} + $3 \
             WHERE name = $1 AND lease_expires_at <= {now} \
             AND (last_completed_at IS NULL OR last_completed_at <= {now} - $4)",
        ))
        .bind(name())
        .bind(Value::Text(request.holder.to_owned()))
        .bind(Value::Span(request.duration))
        .bind(Value::Span(request.min_interval));
        self.changed(take).await
    }

    async fn renew(
        &self,
        name: &str,
        holder: &str,
        duration: Duration,
    ) -> Result<bool, StoreError> {
        self.changed(
            Self::by_holder(
                "UPDATE maintenance_leases SET lease_expires_at = {now} + $3 \
                 WHERE name = $1 AND holder = $2 AND lease_expires_at > {now}",
                name,
                holder,
            )
            .bind(Value::Span(duration)),
        )
        .await
    }

    async fn complete(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.changed(Self::by_holder(
            "UPDATE maintenance_leases \
             SET holder = NULL, lease_expires_at = {now}, last_completed_at = {now} \
             WHERE name = $1 AND holder = $2",
            name,
            holder,
        ))
        .await
        .map(drop)
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.changed(Self::by_holder(
            "UPDATE maintenance_leases SET holder = NULL, lease_expires_at = {now} \
             WHERE name = $1 AND holder = $2",
            name,
            holder,
        ))
        .await
        .map(drop)
    }

    async fn load_state(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .db
            .texts(
                Statement::new("SELECT state FROM maintenance_leases WHERE name = $1")
                    .bind(Value::Text(name.to_owned())),
            )
            .await
            .map_err(|error| self.db.store_error(error))?;
        Ok(row.and_then(|columns| columns.into_iter().next().flatten()))
    }

    async fn save_state(&self, name: &str, holder: &str, state: &str) -> Result<bool, StoreError> {
        self.changed(
            Self::by_holder(
                "UPDATE maintenance_leases SET state = $3 \
                 WHERE name = $1 AND holder = $2 AND lease_expires_at > {now}",
                name,
                holder,
            )
            .bind(Value::Text(state.to_owned())),
        )
        .await
    }
}
