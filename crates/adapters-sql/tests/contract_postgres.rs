//! The contract suites against PostgreSQL at `DATABASE_URL`, a scratch schema per test.
//! Without `DATABASE_URL` (or with the server unreachable) every test says it skipped; with
//! `SANDKEEPER_REQUIRE_POSTGRES=1` it fails instead.

mod support;

mod postgres_repository {
    sandkeeper_ports::session_repository_contract!(
        crate::support::postgres_repository,
        when = crate::support::postgres_url().await.is_some()
    );
}

mod postgres_leases {
    sandkeeper_ports::maintenance_leases_contract!(
        crate::support::postgres_leases,
        when = crate::support::postgres_url().await.is_some()
    );
}

mod postgres_advisory_locker {
    sandkeeper_ports::lifecycle_locker_contract!(
        crate::support::postgres_locker,
        when = crate::support::postgres_url().await.is_some()
    );
}

mod postgres_workspaces {
    sandkeeper_ports::workspace_store_contract!(
        crate::support::postgres_workspaces,
        when = crate::support::postgres_url().await.is_some()
    );
}

mod postgres_pool {
    sandkeeper_ports::pool_store_contract!(
        crate::support::postgres_pool,
        when = crate::support::postgres_url().await.is_some()
    );
}
