//! What the kinds read through Apache OpenDAL share (`s3`, `webdav`): the
//! one HTTP client an operator lists and reads with, the bound of a
//! listing, and the `Source` a polled store is to the pass (listed once a
//! pass, unavailable when the listing says the store is not there, read
//! in slices). Each kind keeps its own folder: its section, its operator,
//! what its errors mean, and what a listing request looks like.

mod bound;
mod http;
mod polled;

pub(crate) use bound::{Bound, Ended, MAX_LISTED};
pub(crate) use http::one_client;
pub(crate) use polled::{polled, Remote};
