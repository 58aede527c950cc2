//! SQLite as the manifest (the embedded backend).
