//! Rule engine tests.
