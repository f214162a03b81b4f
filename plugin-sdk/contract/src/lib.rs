//! What the Crogia server, the plugin SDK and the SDK's `#[tool]` macro must
//! agree on, in one place: the contract versions (read from the WIT files
//! themselves), the rule for tool names, and the names of the host
//! capabilities a tool can declare.
//!
//! No dependencies, so the proc-macro crate, the wasm SDK and the native
//! server can all use it.

#![no_std]

/// The WIT package every plugin interface belongs to.
pub const PACKAGE: &str = "crogia:plugin";

/// The contract the SDK builds against: the version in its WIT file.
pub const CURRENT: &str = package_version(include_str!("../../wit/v0.2.0/plugin.wit"));

/// Every contract version a server loads, oldest first. A server keeps one
/// binding per version, so a plugin built for an older one keeps working.
pub const SUPPORTED: [&str; 2] = [
    package_version(include_str!("../../wit/v0.1.0/plugin.wit")),
    CURRENT,
];

/// The version in a WIT file's `package crogia:plugin@X;` line.
const fn package_version(wit: &'static str) -> &'static str {
    let bytes = wit.as_bytes();
    let needle = b"\npackage crogia:plugin@";
    let mut at = 0;
    'search: while at + needle.len() <= bytes.len() {
        let mut i = 0;
        while i < needle.len() {
            if bytes[at + i] != needle[i] {
                at += 1;
                continue 'search;
            }
            i += 1;
        }
        let start = at + needle.len();
        let mut end = start;
        while end < bytes.len() && bytes[end] != b';' {
            end += 1;
        }
        let (_, rest) = bytes.split_at(start);
        let (version, _) = rest.split_at(end - start);
        match core::str::from_utf8(version) {
            Ok(v) => return v,
            Err(_) => panic!("the package line is not UTF-8"),
        }
    }
    panic!("the WIT file has no `package crogia:plugin@...;` line")
}

/// Most characters in a tool name.
pub const MAX_TOOL_NAME: usize = 64;

/// The tool-name rule, in words, for error messages.
pub const TOOL_NAME_RULE: &str = "1 to 64 characters of a-z, 0-9 and _, starting with a letter (like read_file), and not `network`";

/// The name approval requests for a sandbox's connections carry in place of
/// a tool's: no tool may take it.
pub const NETWORK_TOOL: &str = "network";

/// Whether `name` is a valid tool name: what every OpenAI-compatible API
/// accepts as a function name, and one spelling for the model, the config
/// file and the API.
pub const fn valid_tool_name(name: &str) -> bool {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > MAX_TOOL_NAME || !b[0].is_ascii_lowercase() {
        return false;
    }
    if name.eq_ignore_ascii_case(NETWORK_TOOL) {
        return false;
    }
    let mut i = 1;
    while i < b.len() {
        let c = b[i];
        if !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_') {
            return false;
        }
        i += 1;
    }
    true
}

/// A host capability a tool can declare (contract 0.2), spelt as in the WIT
/// file and in the server's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    /// Reading files, listing directories, searching.
    FilesRead,
    /// Writing files.
    FilesWrite,
    /// Running commands.
    Exec,
    /// Starting, listing, stopping background processes and reading their logs.
    Processes,
}

impl Capability {
    /// Every capability, in the WIT file's order.
    pub const ALL: [Capability; 4] = [
        Self::FilesRead,
        Self::FilesWrite,
        Self::Exec,
        Self::Processes,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::FilesRead => "files-read",
            Self::FilesWrite => "files-write",
            Self::Exec => "exec",
            Self::Processes => "processes",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Whether a tool that uses only this capability leaves the sandbox as
    /// it found it.
    pub const fn read_only(self) -> bool {
        matches!(self, Self::FilesRead)
    }
}

impl core::fmt::Display for Capability {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_wit_files() {
        assert_eq!(SUPPORTED, ["0.1.0", "0.2.0"]);
        assert_eq!(CURRENT, "0.2.0");
    }

    #[test]
    fn the_tool_name_rule() {
        for ok in ["read_file", "a", "x9_y", &"a".repeat(64)] {
            assert!(valid_tool_name(ok), "{ok}");
        }
        for bad in [
            "",
            "network",
            "9lives",
            "_x",
            "Read",
            "a-b",
            "a b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(!valid_tool_name(bad), "{bad}");
        }
    }

    #[test]
    fn capability_names_round_trip() {
        for c in Capability::ALL {
            assert_eq!(Capability::from_name(c.name()), Some(c));
        }
        assert_eq!(Capability::from_name("network"), None);
    }
}
