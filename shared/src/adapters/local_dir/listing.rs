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
//! Memory: a kept directory costs its names plus 8 bytes an entry (about 28 MB for a million
//! files of 20-byte names), for at most [`CACHED_DIRECTORIES`] directories, dropped when a
//! listing reaches its end. Directories of fewer than [`CACHE_MIN_ENTRIES`] entries are cheap
//! to read again and never kept.

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
        let mut objects = Vec::new();
        walk_in_key_order(&self.listings, &bucket_directory, "", &filter, &mut objects)
            .map_err(|error| StoreError::backend(bucket, prefix, error))?;
        let next_start_after = if objects.len() > max_keys {
            objects.truncate(max_keys);
            objects.last().map(|last_object| last_object.key.clone())
        } else {
            // The listing is over: what it kept is not needed any more.
            self.listings.clear();
            None
        };
        Ok(ListPage { objects, next_start_after })
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
    /// Every name (a subdirectory's with its `/`), concatenated in the order read.
    names: String,
    /// `(start, length)` of each name in `names`, in byte order of the names.
    order: Vec<(u32, u32)>,
}

impl SortedDirectory {
    fn read(path: &Path) -> io::Result<SortedDirectory> {
        // Stamped before reading: a change during the read leaves a stamp that no longer
        // matches, and the next page reads again.
        let stamp = Stamp::of(&fs::metadata(path)?);
        let read_started = SystemTime::now();
        let narrow = |value: usize| {
            u32::try_from(value).map_err(|_| {
                io::Error::other(format!(
                    "directory {} holds more than 4 GiB of file names: split it into subdirectories to list it",
                    path.display()
                ))
            })
        };
        let mut names = String::new();
        // Narrowed as they are read: a million spans of two `usize`s beside the `u32` ones were
        // 16 MB more at the peak of a scan.
        let mut order: Vec<(u32, u32)> = Vec::new();
        for directory_entry in fs::read_dir(path)? {
            let directory_entry = directory_entry?;
            let Ok(file_name) = directory_entry.file_name().into_string() else {
                tracing::warn!(directory = %path.display(), "skipping a file whose name is not UTF-8: it cannot be a key");
                continue;
            };
            let file_type = directory_entry.file_type()?;
            let start = names.len();
            if file_type.is_dir() {
                names.push_str(&file_name);
                names.push('/');
            } else if file_type.is_file() {
                names.push_str(&file_name);
            } else {
                continue;
            }
            order.push((narrow(start)?, narrow(names.len() - start)?));
        }
        // Kept until the listing ends: without the room their growth left.
        names.shrink_to_fit();
        order.shrink_to_fit();
        order.sort_unstable_by(|left, right| span(&names, *left).cmp(span(&names, *right)));
        let settled = stamp.modified.is_some_and(|modified| modified + SETTLE <= read_started);
        Ok(SortedDirectory { path: path.to_path_buf(), stamp, settled, names, order })
    }

    fn name(&self, index: usize) -> &str {
        self.entry(self.order[index])
    }

    fn entry(&self, (start, length): (u32, u32)) -> &str {
        &self.names[start as usize..(start + length) as usize]
    }

    /// The index of the first entry that can hold a key the filter wants, found by binary
    /// search: every entry before it holds only keys at or before `start_after`, or before
    /// the prefix.
    fn first_wanted(&self, directory_key_prefix: &str, filter: &ListFilter<'_>) -> usize {
        let after_start = match filter.start_after {
            None => 0,
            Some(start_after) => match start_after.strip_prefix(directory_key_prefix) {
                Some(relative) => {
                    self.order.partition_point(|&entry| entirely_before(self.entry(entry), relative, true))
                }
                None if start_after < directory_key_prefix => 0,
                None => self.order.len(),
            },
        };
        let in_prefix = match filter.prefix.strip_prefix(directory_key_prefix) {
            Some(relative) => self.order.partition_point(|&entry| entirely_before(self.entry(entry), relative, false)),
            None => 0,
        };
        after_start.max(in_prefix)
    }
}

fn span(names: &str, (start, length): (u32, u32)) -> &str {
    &names[start as usize..(start + length) as usize]
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

/// The sorted directories of the listings in progress; see the module doc.
#[derive(Debug, Default)]
pub(super) struct ListingCache {
    /// Most recently used last.
    directories: Mutex<Vec<Arc<SortedDirectory>>>,
    #[cfg(test)]
    reads: std::sync::atomic::AtomicUsize,
}

impl ListingCache {
    /// `path`'s sorted entries: kept ones if the directory has not changed since, else read.
    fn sorted(&self, path: &Path) -> io::Result<Arc<SortedDirectory>> {
        let stamp = Stamp::of(&fs::metadata(path)?);
        {
            let mut directories = self.directories.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(position) = directories.iter().position(|kept| kept.path == path) {
                let kept = directories.remove(position);
                if kept.stamp == stamp {
                    directories.push(Arc::clone(&kept));
                    return Ok(kept);
                }
            }
        }
        #[cfg(test)]
        self.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let read = Arc::new(SortedDirectory::read(path)?);
        if read.settled && read.order.len() >= CACHE_MIN_ENTRIES {
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
    let entries = match cache.sorted(directory) {
        Ok(entries) => entries,
        // Pruned by a concurrent delete: it held nothing.
        Err(error) if error.kind() == io::ErrorKind::NotFound && !directory_key_prefix.is_empty() => return Ok(()),
        Err(error) => return Err(error),
    };
    for index in entries.first_wanted(directory_key_prefix, filter)..entries.order.len() {
        if objects.len() >= filter.num_keys_wanted {
            break;
        }
        let name = entries.name(index);
        let entry_key = format!("{directory_key_prefix}{name}");
        if !entry_key.starts_with(filter.prefix) && !filter.prefix.starts_with(&entry_key) {
            if entry_key.as_str() > filter.prefix {
                // Past the prefix: so is every later entry.
                break;
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
    Ok(())
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
