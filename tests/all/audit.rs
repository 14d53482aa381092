//! Audit log tests.
