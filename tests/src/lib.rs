//! Cross-crate end-to-end tests of Backbone: they start services in-process on `127.0.0.1:0` and make
//! real calls between them. The services they need are not built yet, so this crate holds no tests yet.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
