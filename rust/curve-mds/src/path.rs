//! Validation and splitting of Curve namespace paths (reference §13). A valid path is "/" or
//! "/a/b/..." with non-empty components of at most 255 bytes. "." and ".." are refused because
//! the MDS stores names literally and would otherwise create entries no client can address,
//! and so is NUL, which no C client can send (upstream's MDS accepts all three). Names are
//! keys in the store and never become file-system paths, so nothing here can reach outside
//! the namespace; these rules keep every entry addressable.

/// Longest name of one path component, in bytes.
pub(crate) const MAX_NAME_LEN: usize = 255;

/// The components of a valid absolute path ("/" has none), or `None` if the path is invalid.
pub(crate) fn components(path: &str) -> Option<Vec<&str>> {
    let rest = path.strip_prefix('/')?;
    if rest.is_empty() {
        return Some(Vec::new());
    }
    let comps: Vec<&str> = rest.split('/').collect();
    let valid = comps.iter().all(|c| {
        !c.is_empty() && *c != "." && *c != ".." && c.len() <= MAX_NAME_LEN && !c.contains('\0')
    });
    valid.then_some(comps)
}

/// Whether one path's components are a leading run of the other's (either way round).
pub(crate) fn is_component_prefix(a: &[&str], b: &[&str]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_paths() {
        assert_eq!(components("/"), Some(vec![]));
        assert_eq!(components("/a"), Some(vec!["a"]));
        assert_eq!(components("/a/b c/d-1"), Some(vec!["a", "b c", "d-1"]));
        assert_eq!(components("/.hidden/..x"), Some(vec![".hidden", "..x"]));
        let longest = format!("/{}", "n".repeat(255));
        assert!(components(&longest).is_some());
    }

    #[test]
    fn invalid_paths() {
        for p in [
            "",
            "a",
            "a/b",
            "//",
            "/a/",
            "/a//b",
            "/.",
            "/..",
            "/a/./b",
            "/a/../b",
            "/a/b/",
            "./a",
            "../a",
            "//a",
            "/../RecycleBin",
            "/RecycleBin/..",
            "/a\0b",
            "/\0",
            " /a",
        ] {
            assert_eq!(components(p), None, "{p:?} must be refused");
        }
        let too_long = format!("/{}", "n".repeat(256));
        assert_eq!(components(&too_long), None);
    }

    #[test]
    fn prefixes() {
        assert!(is_component_prefix(&["a"], &["a", "b"]));
        assert!(is_component_prefix(&["a", "b"], &["a"]));
        assert!(!is_component_prefix(&["a"], &["ab"]));
        assert!(!is_component_prefix(&["a", "c"], &["a", "b"]));
    }
}
