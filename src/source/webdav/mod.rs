//! WebDAV source: a folder on a WebDAV share (Nextcloud, ownCloud, any
//! `rclone serve webdav`), read through Apache OpenDAL and polled. It is
//! the S3 kind's poll over another listing: each file is stamped by what
//! PROPFIND says of it (ETag, size, last-modified), an unmoved stamp costs
//! no GET, a moved one one GET and a BLAKE3 hash. The listing is one
//! PROPFIND per folder; one that fails part-way protects every record.

mod client;
mod config;
mod seam;

pub use config::{RawWebdav, WebdavConfig};
