//! The contract suites against SQLite: a file of its own per test, and in memory.
//! (SQLite has no locker of its own: one process, so the process-local locker serves it.)

mod support;

mod sqlite_file_repository {
    sandkeeper_ports::session_repository_contract!(crate::support::sqlite_repository);
}

mod sqlite_memory_repository {
    sandkeeper_ports::session_repository_contract!(crate::support::sqlite_memory_repository);
}

mod sqlite_file_leases {
    sandkeeper_ports::maintenance_leases_contract!(crate::support::sqlite_leases);
}

mod sqlite_file_pool {
    sandkeeper_ports::pool_store_contract!(crate::support::sqlite_pool);
}
