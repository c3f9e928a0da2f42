//! The part of a source one pass looks at: everything (a full reconcile) or
//! the paths the watcher reported, each a file or a whole subtree. Keys and
//! paths are `/`-separated and relative to the job's root.

use std::collections::BTreeSet;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    /// Never empty, and no entry lies below another one.
    Paths(BTreeSet<String>),
    /// The keys in `[from, until)` (no end when `None`), and only those
    /// under `within` when set: one slice of a pass, which reads, plans
    /// and pushes a large tree (or a large scoped subtree) a slice at a
    /// time. Made by the pass, never by a watcher.
    Range {
        from: String,
        until: Option<String>,
        within: Option<BTreeSet<String>>,
    },
}

impl Scope {
    /// The scope covering `paths`; `""` (the root itself) means everything.
    /// Returns `None` when there is nothing to look at.
    pub fn of<I, S>(paths: I) -> Option<Scope>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut all: BTreeSet<String> = BTreeSet::new();
        for p in paths {
            let p: String = p.into();
            let p = p.trim_matches('/').to_owned();
            if p.is_empty() {
                return Some(Scope::All);
            }
            all.insert(p);
        }
        // Sorted order puts "a" right before "a/b" (and before "a0"), so a
        // nested entry always follows one of its ancestors that was kept.
        let mut kept: BTreeSet<String> = BTreeSet::new();
        for p in all {
            if !covered_by(&kept, &p) {
                kept.insert(p);
            }
        }
        (!kept.is_empty()).then_some(Scope::Paths(kept))
    }

    pub fn is_all(&self) -> bool {
        matches!(self, Scope::All)
    }

    /// True when the item `key` (a file) is inside the scope.
    pub fn covers(&self, key: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Paths(set) => covered_by(set, key),
            Scope::Range {
                from,
                until,
                within,
            } => {
                key >= from.as_str()
                    && until.as_deref().is_none_or(|u| key < u)
                    && within.as_ref().is_none_or(|set| covered_by(set, key))
            }
        }
    }

    /// The slice `[from, until)` of this scope.
    pub fn slice(&self, from: String, until: Option<String>) -> Scope {
        Scope::Range {
            from,
            until,
            within: match self {
                Scope::Paths(set) => Some(set.clone()),
                Scope::Range { within, .. } => within.clone(),
                Scope::All => None,
            },
        }
    }

    /// True when a walk must descend into the folder `dir`: it is inside the
    /// scope, or a scoped path lies below it.
    pub fn enters(&self, dir: &str) -> bool {
        let set = match self {
            Scope::All | Scope::Range { within: None, .. } => return true,
            Scope::Paths(set)
            | Scope::Range {
                within: Some(set), ..
            } => set,
        };
        if dir.is_empty() || covered_by(set, dir) {
            return true;
        }
        let below = format!("{dir}/");
        set.range(below.clone()..)
            .next()
            .is_some_and(|p| p.starts_with(&below))
    }

    /// The scoped paths (of a slice, those it lies within); empty for
    /// `All` and a slice of it.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        let set = match self {
            Scope::All | Scope::Range { within: None, .. } => None,
            Scope::Paths(set)
            | Scope::Range {
                within: Some(set), ..
            } => Some(set),
        };
        set.into_iter().flatten().map(String::as_str)
    }
}

/// `path` relative to `root` as a `/`-separated key (`""` for the root
/// itself), `None` when it lies outside. Lossy on non-UTF-8 names: this
/// key only decides where to look; the scan reports such names.
pub fn key_under(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let mut key = String::new();
    for part in rel.components() {
        if !key.is_empty() {
            key.push('/');
        }
        key.push_str(&part.as_os_str().to_string_lossy());
    }
    Some(key)
}

/// `key` equals an entry of `set` or lies below one.
fn covered_by(set: &BTreeSet<String>, key: &str) -> bool {
    if set.contains(key) {
        return true;
    }
    key.match_indices('/').any(|(i, _)| set.contains(&key[..i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(s: &Scope) -> Vec<&str> {
        s.paths().collect()
    }

    #[test]
    fn nested_paths_collapse_into_their_ancestor() {
        let s = Scope::of(["a/b/c.md", "a/b", "a0", "x/", "a/bc.md"]).unwrap();
        assert_eq!(paths(&s), ["a/b", "a/bc.md", "a0", "x"]);
    }

    #[test]
    fn the_root_means_everything_and_nothing_means_none() {
        assert_eq!(Scope::of(["a", ""]), Some(Scope::All));
        assert_eq!(Scope::of(Vec::<String>::new()), None);
    }

    #[test]
    fn covers_files_at_or_below_a_path_only() {
        let s = Scope::of(["docs/guide", "readme.md"]).unwrap();
        for key in [
            "docs/guide",
            "docs/guide/a.md",
            "docs/guide/x/y.md",
            "readme.md",
        ] {
            assert!(s.covers(key), "{key}");
        }
        for key in [
            "docs/guide.md",
            "docs/guides/a.md",
            "docs/a.md",
            "readme.md.bak",
        ] {
            assert!(!s.covers(key), "{key}");
        }
    }

    #[test]
    fn enters_ancestors_and_scoped_folders_only() {
        let s = Scope::of(["docs/guide/a.md"]).unwrap();
        for dir in ["", "docs", "docs/guide"] {
            assert!(s.enters(dir), "{dir}");
        }
        for dir in ["doc", "docs/guide2", "other", "docs/g"] {
            assert!(!s.enters(dir), "{dir}");
        }
        assert!(Scope::of(["docs"]).unwrap().enters("docs/deep/er"));
    }

    #[test]
    fn a_slice_of_scoped_paths_covers_their_keys_within_its_range_only() {
        let s = Scope::of(["b", "d/e.md"]).unwrap();
        let slice = s.slice("b/m".into(), Some("d/z".into()));
        for key in ["b/m", "b/n/x.md", "d/e.md"] {
            assert!(slice.covers(key), "{key}");
        }
        // Below the range, past it, or in range but outside the paths.
        for key in ["b/a.md", "b/l.md", "c/x.md", "d/f.md", "e.md"] {
            assert!(!slice.covers(key), "{key}");
        }
        assert_eq!(paths(&slice), ["b", "d/e.md"]);
        let whole = Scope::All.slice("m".into(), None);
        assert!(whole.covers("x/y.md") && !whole.covers("a.md"));
        assert_eq!(paths(&whole), Vec::<&str>::new());
    }
}
