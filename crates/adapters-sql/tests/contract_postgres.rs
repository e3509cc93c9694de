//! The contract suites against PostgreSQL at `DATABASE_URL`, a scratch schema per test.
//! Without `DATABASE_URL` (or with the server unreachable) every test says it skipped; with
//! `SANDKEEPER_REQUIRE_POSTGRES=1` it fails instead.

mod support;

/// A module `$module` running the suite `$suite` on the stores that `support::$factory` makes,
/// each test only when PostgreSQL is there.
macro_rules! postgres_suites {
    ($($module:ident: $suite:ident($factory:ident);)*) => {
        $(
            mod $module {
                sandkeeper_ports::$suite!(
                    crate::support::$factory,
                    when = crate::support::postgres_url().await.is_some()
                );
            }
        )*
    };
}

postgres_suites! {
    postgres_repository: session_repository_contract(postgres_repository);
    postgres_leases: maintenance_leases_contract(postgres_leases);
    postgres_advisory_locker: lifecycle_locker_contract(postgres_locker);
    postgres_workspaces: workspace_store_contract(postgres_workspaces);
    postgres_pool: pool_store_contract(postgres_pool);
}
