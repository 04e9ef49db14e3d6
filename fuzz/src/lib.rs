//! The checks behind the fuzz targets (docs/fuzzing.md): one function per parser of untrusted
//! bytes, which runs the parser on the input and panics when a property fails. The binaries in
//! `src/bin/` hand these functions AFL++'s inputs; a panic is what AFL++ records as a crash.
//!
//! Each check asserts more than "no panic": what a parser accepts must mean what it says
//! (round trips through the canonical form, split-independence, records that tile the file),
//! because a parser that silently misreads hostile input is as dangerous as one that crashes.

#![deny(clippy::unwrap_used)]

pub mod headers;
pub mod resp;
pub mod schedule;
pub mod segment;
