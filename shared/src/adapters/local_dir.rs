//! A local directory as an object store (the embedded backend).
