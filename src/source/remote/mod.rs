//! What the kinds read through Apache OpenDAL share (`s3`, `webdav`): the
//! one HTTP client an operator lists and reads with, and the bound of a
//! listing. Each kind keeps its own folder: its section, its operator,
//! what its errors mean, and what a listing request looks like.

mod bound;
mod http;

pub(crate) use bound::{Bound, Ended, MAX_LISTED};
pub(crate) use http::one_client;
