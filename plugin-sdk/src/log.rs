//! Messages for the server's log, under the plugin's name (needs no
//! capability).

use crate::bindings::crogia::plugin::log::{Level, log};

pub fn debug(message: &str) {
    log(Level::Debug, message)
}

pub fn info(message: &str) {
    log(Level::Info, message)
}

pub fn warn(message: &str) {
    log(Level::Warn, message)
}

pub fn error(message: &str) {
    log(Level::Error, message)
}
