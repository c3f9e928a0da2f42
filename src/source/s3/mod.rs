//! S3 source: a bucket (or a prefix in it) on AWS or an S3-compatible
//! server, read through Apache OpenDAL and polled. The listing stamps
//! every object (ETag, size, last-modified); an object whose stamp did not
//! move costs no GET, a moved one costs one GET and a BLAKE3 hash. A
//! listing that fails or stops part-way protects every record.

pub(crate) mod client;
pub(crate) mod config;
pub(crate) mod listing;
pub(crate) mod object;
pub(crate) mod scan;
mod seam;

pub use config::{RawS3, S3Config};
pub use listing::{Entry, Listing, Stamp};
