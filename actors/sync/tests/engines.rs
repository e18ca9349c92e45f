//! Engine tests (PostgreSQL, etcd): run when their URL variables are set.
