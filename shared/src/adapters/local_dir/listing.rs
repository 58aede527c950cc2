//! Listing a local directory in key order, in time linear in the number of keys.
//!
//! S3 lists keys in UTF-8 byte order, a page at a time, and a backfill (`ingest --scan`) pages
//! through a prefix that may hold a million files in one directory. The file system returns a
//! directory's entries in no useful order, so a walk must read and sort a whole directory to
//! know its first keys. Doing that for every page of 1,000 made listing n files of one
//! directory cost n²/1,000 (minutes for a million). So each directory's sorted names are kept
//! between pages ([`ListingCache`]) and each page starts by binary search where the last one
//! stopped: a listing reads and sorts a directory once.
//!
//! A kept directory is reused only while it is unchanged: its modification time, change time
//! and inode are compared on every page (one `stat`), so a key written or deleted between two
//! pages shows as it would on S3. A file system stamps times at a coarse granularity (up to 2 s
//! on some), so a write right after a read could leave them as they were; a directory read
//! less than [`SETTLE`] after its last change is therefore never kept, only read again.
//!
//! Memory: a directory is read as a window of at most [`WINDOW_ENTRIES`] names, the smallest
//! after where the listing is, picked as the entries stream past (a bounded max-heap), so a
//! listing holds the same few megabytes however many files a directory has. A listing that
//! passes the window's last name reads the directory again for the next window: a million
//! files in one directory are read 16 times, about 0.6 s each here, instead of being held
//! whole (28 MB a million names, which made a scan's peak RSS grow 1.7x from 100,000 files
//! to 1,000,000). At most [`CACHED_DIRECTORIES`] windows are kept, dropped when a listing
//! reaches its end; directories of fewer than [`CACHE_MIN_ENTRIES`] entries are cheap to read
//! again and never kept.

use std::fs::{self, Metadata};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::{invalid_request, object_meta, LocalDir};
use crate::ports::{ListPage, ObjectMeta, StoreError};

/// How long after its last change a directory's listing may be kept: longer than the
/// coarsest timestamp granularity of common file systems (FAT's 2 s), so a later change
/// always moves the stamp.
const SETTLE: Duration = Duration::from_millis(2500);
/// Directories kept at once: a walk holds one per level of nesting it is inside.
const CACHED_DIRECTORIES: usize = 4;
/// Smaller directories are read again for each page.
const CACHE_MIN_ENTRIES: usize = 1024;
/// Names of one directory held at once (about 3 MiB of 20-byte names).
const WINDOW_ENTRIES: usize = 65_536;

/// Which keys a listing wants.
pub(super) struct ListFilter<'a> {
    prefix: &'a str,
    start_after: Option<&'a str>,
    /// Stop once this many keys are collected: `max_keys + 1`, to know whether more remain.
    num_keys_wanted: usize,
}

impl LocalDir {
    pub(super) fn list_blocking(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> Result<ListPage, StoreError> {
        let bucket_directory = self.existing_bucket_directory(bucket)?;
        if max_keys == 0 {
            return Err(invalid_request(bucket, prefix, "max_keys is 0: ask for at least one key per page"));
        }
        let filter = ListFilter { prefix, start_after, num_keys_wanted: max_keys.saturating_add(1) };
        if start_after.is_none() {
            // A listing from the start counts every directory's unlistable names again, even
            // when the listing before it was left before its end.
            self.listings.forget_counted_unlistable();
        }
        let mut objects = Vec::new();
        walk_in_key_order(&self.listings, &bucket_directory, "", &filter, &mut objects)
            .map_err(|error| StoreError::backend(bucket, prefix, error))?;
        let unlistable = self.listings.take_unlistable();
        let next_start_after = if objects.len() > max_keys {
            objects.truncate(max_keys);
            objects.last().map(|last_object| last_object.key.clone())
        } else {
            // The listing is over: what it kept is not needed any more.
            self.listings.clear();
            None
        };
        Ok(ListPage { objects, next_start_after, unlistable })
    }
}

/// What identifies a directory's state: any entry added, removed or renamed changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    #[cfg(unix)]
    changed: (i64, i64),
    #[cfg(unix)]
    inode: (u64, u64),
}

impl Stamp {
    fn of(metadata: &Metadata) -> Stamp {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Stamp {
            modified: metadata.modified().ok(),
            #[cfg(unix)]
            changed: (metadata.ctime(), metadata.ctime_nsec()),
            #[cfg(unix)]
            inode: (metadata.dev(), metadata.ino()),
        }
    }
}

/// One directory's entries, sorted as the keys they lead to: a subdirectory `a` as `a/`.
#[derive(Debug)]
struct SortedDirectory {
    path: PathBuf,
    stamp: Stamp,
    /// Read at least [`SETTLE`] after the directory's last change: safe to keep.
    settled: bool,
    /// The window's names (a subdirectory's with its `/`), in byte order.
    names: Vec<String>,
    /// The greatest name the read skipped as before the listing's position: the window holds
    /// the directory's names after it (all names when `None`).
    skipped_through: Option<String>,
    /// Whether the window holds every name after `skipped_through`, up to the directory's end.
    complete: bool,
    /// Entries the directory had when read.
    entries: usize,
    /// Files whose names are not UTF-8, so cannot be keys: left out of `names`.
    unlistable: usize,
}

impl SortedDirectory {
    /// Reads the window of `path`'s names that `skip` does not skip: the `window_entries`
    /// smallest. `skip` must hold for a prefix of the names in sorted order.
    fn read(path: &Path, skip: &dyn Fn(&str) -> bool, window_entries: usize) -> io::Result<SortedDirectory> {
        // Stamped before reading: a change during the read leaves a stamp that no longer
        // matches, and the next page reads again.
        let stamp = Stamp::of(&fs::metadata(path)?);
        let read_started = SystemTime::now();
        let mut window: std::collections::BinaryHeap<String> = std::collections::BinaryHeap::new();
        let mut skipped_through: Option<String> = None;
        let mut complete = true;
        let mut entries = 0;
        let mut unlistable = 0;
        for directory_entry in fs::read_dir(path)? {
            let directory_entry = directory_entry?;
            let Ok(mut name) = directory_entry.file_name().into_string() else {
                // Counted and logged once a listing by the cache (`ListingCache::sorted`), not
                // at each of the directory's reads.
                unlistable += 1;
                continue;
            };
            let file_type = directory_entry.file_type()?;
            if file_type.is_dir() {
                name.push('/');
            } else if !file_type.is_file() {
                continue;
            }
            entries += 1;
            if skip(&name) {
                if skipped_through.as_ref().is_none_or(|greatest| name > *greatest) {
                    skipped_through = Some(name);
                }
                continue;
            }
            if window.len() < window_entries {
                window.push(name);
            } else if window.peek().is_some_and(|greatest| name < *greatest) {
                window.pop();
                window.push(name);
                complete = false;
            } else {
                complete = false;
            }
        }
        let names = window.into_sorted_vec();
        let settled = stamp.modified.is_some_and(|modified| modified + SETTLE <= read_started);
        Ok(SortedDirectory {
            path: path.to_path_buf(),
            stamp,
            settled,
            names,
            skipped_through,
            complete,
            entries,
            unlistable,
        })
    }

    /// Whether this window can serve a listing whose position `skip` gives: it skipped no name
    /// the listing wants, and holds the first one the listing wants, unless the directory has
    /// none left.
    fn serves(&self, skip: &dyn Fn(&str) -> bool) -> bool {
        self.skipped_through.as_deref().is_none_or(skip)
            && (self.complete || self.first_unskipped(skip) < self.names.len())
    }

    /// The index of the first name of the window that `skip` does not skip.
    fn first_unskipped(&self, skip: &dyn Fn(&str) -> bool) -> usize {
        self.names.partition_point(|name| skip(name))
    }

    fn last_name(&self) -> Option<&str> {
        self.names.last().map(String::as_str)
    }
}

/// Whether every key of entry `name` of the directory at `directory_key_prefix` sorts before
/// what the filter wants: at or before `start_after`, or before the prefix. Holds for a prefix
/// of the directory's names in sorted order ([`entirely_before`]).
fn before_wanted(name: &str, directory_key_prefix: &str, filter: &ListFilter<'_>) -> bool {
    let before_start = match filter.start_after {
        None => false,
        Some(start_after) => match start_after.strip_prefix(directory_key_prefix) {
            Some(relative) => entirely_before(name, relative, true),
            None => start_after >= directory_key_prefix,
        },
    };
    before_start
        || filter
            .prefix
            .strip_prefix(directory_key_prefix)
            .is_some_and(|relative| entirely_before(name, relative, false))
}

/// Whether every key of entry `name` (a file's one key, or every key below a subdirectory
/// `name` ending in `/`) sorts before `bound`, or at it when `inclusive`, all relative to one
/// directory. Monotone over a directory's sorted names, as a binary search needs: names in one
/// directory have no `/` but a subdirectory's last byte, so none is a prefix of another.
fn entirely_before(name: &str, bound: &str, inclusive: bool) -> bool {
    if name.ends_with('/') {
        name < bound && !bound.starts_with(name)
    } else if inclusive {
        name <= bound
    } else {
        name < bound
    }
}

/// The sorted directory windows of the listings in progress; see the module doc.
#[derive(Debug)]
pub(super) struct ListingCache {
    /// Most recently used last.
    directories: Mutex<Vec<Arc<SortedDirectory>>>,
    window_entries: usize,
    /// Directories whose unlistable names this listing has counted: each directory's once,
    /// however many times a listing reads it (a window at a time, or again for each page).
    counted_unlistable: Mutex<std::collections::HashSet<PathBuf>>,
    /// Unlistable names counted and not yet taken into a page ([`Self::take_unlistable`]).
    unlistable: std::sync::atomic::AtomicU64,
    #[cfg(test)]
    reads: std::sync::atomic::AtomicUsize,
}

impl Default for ListingCache {
    fn default() -> Self {
        Self::with_window(WINDOW_ENTRIES)
    }
}

impl ListingCache {
    fn with_window(window_entries: usize) -> Self {
        Self {
            directories: Mutex::default(),
            window_entries: window_entries.max(1),
            counted_unlistable: Mutex::default(),
            unlistable: Default::default(),
            #[cfg(test)]
            reads: Default::default(),
        }
    }

    /// The window of `path`'s sorted names from the first that `skip` does not skip: a kept
    /// one if the directory has not changed since and the window covers that name, else read.
    /// A read's names that cannot be keys are counted (once a listing) when `within_prefix`:
    /// the directory lies wholly inside the listing's prefix, so they would have been listed.
    fn sorted(
        &self,
        path: &Path,
        skip: &dyn Fn(&str) -> bool,
        within_prefix: bool,
    ) -> io::Result<Arc<SortedDirectory>> {
        let stamp = Stamp::of(&fs::metadata(path)?);
        {
            let mut directories = self.directories.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(position) = directories.iter().position(|kept| kept.path == path) {
                let kept = directories.remove(position);
                if kept.stamp == stamp && kept.serves(skip) {
                    directories.push(Arc::clone(&kept));
                    return Ok(kept);
                }
            }
        }
        #[cfg(test)]
        self.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let read = Arc::new(SortedDirectory::read(path, skip, self.window_entries)?);
        if read.unlistable > 0 && within_prefix {
            let newly = self
                .counted_unlistable
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(path.to_path_buf());
            if newly {
                tracing::warn!(directory = %path.display(), files = read.unlistable, "skipping files whose names are not UTF-8: they cannot be keys; rename them to list them");
                self.unlistable.fetch_add(read.unlistable as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if read.settled && read.entries >= CACHE_MIN_ENTRIES {
            let mut directories = self.directories.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            directories.push(Arc::clone(&read));
            if directories.len() > CACHED_DIRECTORIES {
                directories.remove(0);
            }
        }
        Ok(read)
    }

    /// Forgets every kept directory: a listing reached its end.
    pub(super) fn clear(&self) {
        self.directories.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
        self.forget_counted_unlistable();
    }

    /// Forgets which directories' unlistable names were counted: a new listing starts.
    pub(super) fn forget_counted_unlistable(&self) {
        self.counted_unlistable.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
    }

    /// The unlistable names counted since the last call, for the page being answered. Two
    /// listings of one store at once may report each other's counts, or count a directory
    /// twice; one listing at a time (the scan's case) counts each such name once.
    pub(super) fn take_unlistable(&self) -> u64 {
        self.unlistable.swap(0, std::sync::atomic::Ordering::Relaxed)
    }

    #[cfg(test)]
    fn reads(&self) -> usize {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Collects, in UTF-8 byte order, the objects below `directory` that the filter wants.
///
/// A depth-first walk yields keys in byte order only if each directory's entries are sorted as
/// the keys they lead to: a subdirectory `a` as `a/`, so that file `a-c` (`-` < `/`) comes
/// before `a/b`, and `a0` (`0` > `/`) after it.
pub(super) fn walk_in_key_order(
    cache: &ListingCache,
    directory: &Path,
    directory_key_prefix: &str,
    filter: &ListFilter<'_>,
    objects: &mut Vec<ObjectMeta>,
) -> io::Result<()> {
    // Past the window's last name once a window is done: the next window starts after it.
    let mut resume_after: Option<String> = None;
    loop {
        let skip = |name: &str| {
            before_wanted(name, directory_key_prefix, filter)
                || resume_after.as_deref().is_some_and(|after| name <= after)
        };
        let within_prefix = directory_key_prefix.starts_with(filter.prefix);
        let entries = match cache.sorted(directory, &skip, within_prefix) {
            Ok(entries) => entries,
            // Pruned by a concurrent delete: it held nothing.
            Err(error) if error.kind() == io::ErrorKind::NotFound && !directory_key_prefix.is_empty() => return Ok(()),
            Err(error) => return Err(error),
        };
        for name in &entries.names[entries.first_unskipped(&skip)..] {
            if objects.len() >= filter.num_keys_wanted {
                return Ok(());
            }
            let entry_key = format!("{directory_key_prefix}{name}");
            if !entry_key.starts_with(filter.prefix) && !filter.prefix.starts_with(&entry_key) {
                if entry_key.as_str() > filter.prefix {
                    // Past the prefix: so is every later entry.
                    return Ok(());
                }
                continue;
            }
            if let Some(subdirectory) = name.strip_suffix('/') {
                walk_in_key_order(cache, &directory.join(subdirectory), &entry_key, filter, objects)?;
                continue;
            }
            let wanted = entry_key.starts_with(filter.prefix)
                && filter.start_after.is_none_or(|start_after| entry_key.as_str() > start_after);
            if !wanted {
                continue;
            }
            match fs::symlink_metadata(directory.join(name)) {
                Ok(metadata) if metadata.is_file() => objects.push(object_meta(&entry_key, &metadata)),
                // Replaced by a directory, or deleted, since the directory was read.
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
        if entries.complete || objects.len() >= filter.num_keys_wanted {
            return Ok(());
        }
        match entries.last_name() {
            Some(last) => resume_after = Some(last.to_owned()),
            // An incomplete window holds at least one name.
            None => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(cache: &ListingCache, root: &Path, prefix: &str, start_after: Option<&str>, max: usize) -> Vec<String> {
        let filter = ListFilter { prefix, start_after, num_keys_wanted: max };
        let mut objects = Vec::new();
        walk_in_key_order(cache, root, "", &filter, &mut objects).expect("walk");
        objects.into_iter().map(|object| object.key).collect()
    }

    /// Sets a directory's modification time into the past, as if written long ago.
    fn age(directory: &Path) {
        let past = SystemTime::now() - Duration::from_secs(3600);
        fs::File::open(directory).and_then(|file| file.set_modified(past)).expect("backdate the directory");
    }

    fn pages(cache: &ListingCache, root: &Path, prefix: &str, page: usize) -> Vec<String> {
        let mut listed: Vec<String> = Vec::new();
        loop {
            let start_after = listed.last().cloned();
            let next = keys(cache, root, prefix, start_after.as_deref(), page);
            let done = next.len() < page;
            listed.extend(next);
            if done {
                return listed;
            }
        }
    }

    #[test]
    fn a_large_directory_is_read_once_for_all_its_pages() {
        let root = tempfile::tempdir().expect("temporary directory");
        let directory = root.path().join("logs");
        fs::create_dir_all(&directory).unwrap();
        let mut expected: Vec<String> = (0..3000).map(|index| format!("logs/f-{:05}", (index * 7919) % 3000)).collect();
        for key in &expected {
            fs::write(root.path().join(key), b"x").unwrap();
        }
        expected.sort();
        age(&directory);
        let cache = ListingCache::default();
        assert_eq!(pages(&cache, root.path(), "logs/", 100), expected);
        // The root (one entry) is read for each of the 31 pages; `logs/` once.
        assert_eq!(cache.reads(), 31 + 1);
    }

    /// A directory larger than the window is read a window at a time: every key once, in
    /// order, across subdirectories and window boundaries, with a read per window (and per
    /// listing that starts where no kept window reaches).
    #[test]
    fn a_directory_larger_than_the_window_is_listed_a_window_at_a_time() {
        let root = tempfile::tempdir().expect("temporary directory");
        let directory = root.path().join("logs");
        fs::create_dir_all(&directory).unwrap();
        let mut expected: Vec<String> = (0..3000).map(|index| format!("logs/f-{:05}", (index * 7919) % 3000)).collect();
        // Subdirectories between files, one on either side of a window's edge.
        for sub in ["f-00099", "f-01000", "f-02999"] {
            fs::create_dir_all(directory.join(format!("{sub}.d"))).unwrap();
            for name in ["a", "b"] {
                expected.push(format!("logs/{sub}.d/{name}"));
            }
        }
        for key in &expected {
            fs::write(root.path().join(key), b"x").unwrap();
        }
        expected.sort();
        for sub in ["f-00099", "f-01000", "f-02999"] {
            age(&directory.join(format!("{sub}.d")));
        }
        age(&directory);
        let cache = ListingCache::with_window(256);
        assert_eq!(pages(&cache, root.path(), "logs/", 100), expected);
        // The root for each of the 31 pages; `logs/`'s 3,003 entries in 12 windows of 256, and
        // each subdirectory once (small ones are read for each page they are in: one each).
        let logs_reads = cache.reads() - 31;
        assert_eq!(logs_reads, 12 + 3, "reads of logs/ and its subdirectories");
        // A listing that starts deep inside the directory reads from there, not from its start.
        let fresh = ListingCache::with_window(256);
        let tail = keys(&fresh, root.path(), "logs/", Some("logs/f-02900"), 5000);
        let position = expected.iter().position(|key| key == "logs/f-02900").unwrap();
        assert_eq!(tail, expected[position + 1..]);
        assert_eq!(fresh.reads(), 1 + 1 + 1, "the root, one window of logs/, and f-02999.d/");
    }

    #[test]
    fn a_kept_directory_is_read_again_once_it_changes() {
        let root = tempfile::tempdir().expect("temporary directory");
        let directory = root.path().join("d");
        fs::create_dir_all(&directory).unwrap();
        for index in 0..2000 {
            fs::write(directory.join(format!("k{index:04}")), b"x").unwrap();
        }
        age(&directory);
        let cache = ListingCache::default();
        let first = keys(&cache, root.path(), "", None, 1000);
        assert_eq!(first.last().map(String::as_str), Some("d/k0999"));
        // Between pages: one key added after the page, one removed from the next page.
        fs::write(directory.join("k1500a"), b"x").unwrap();
        fs::remove_file(directory.join("k1999")).unwrap();
        let rest = keys(&cache, root.path(), "", Some("d/k0999"), 5000);
        assert_eq!(rest.len(), 1000);
        assert!(rest.contains(&"d/k1500a".to_string()), "a key written between pages is listed");
        assert!(!rest.contains(&"d/k1999".to_string()), "a key deleted between pages is not");
    }

    #[test]
    fn a_recently_changed_directory_is_never_kept() {
        let root = tempfile::tempdir().expect("temporary directory");
        for index in 0..1500 {
            fs::write(root.path().join(format!("k{index:04}")), b"x").unwrap();
        }
        let cache = ListingCache::default();
        assert_eq!(pages(&cache, root.path(), "", 500).len(), 1500);
        assert_eq!(cache.reads(), 4, "read for each page: it changed less than SETTLE ago");
    }

    #[test]
    fn binary_search_starts_inside_the_prefix_and_after_start_after() {
        let root = tempfile::tempdir().expect("temporary directory");
        for name in ["a-c", "a.b", "a0", "b", "ba", "c"] {
            fs::write(root.path().join(name), b"x").unwrap();
        }
        fs::create_dir_all(root.path().join("a")).unwrap();
        fs::write(root.path().join("a/b"), b"x").unwrap();
        let cache = ListingCache::default();
        assert_eq!(keys(&cache, root.path(), "", None, 100), ["a-c", "a.b", "a/b", "a0", "b", "ba", "c"]);
        assert_eq!(keys(&cache, root.path(), "", Some("a/"), 100), ["a/b", "a0", "b", "ba", "c"]);
        assert_eq!(keys(&cache, root.path(), "", Some("a/b"), 100), ["a0", "b", "ba", "c"]);
        assert_eq!(keys(&cache, root.path(), "b", None, 100), ["b", "ba"]);
        assert_eq!(keys(&cache, root.path(), "a/", Some("a"), 100), ["a/b"]);
        assert_eq!(keys(&cache, root.path(), "", Some("bb"), 100), ["c"]);
    }
}
