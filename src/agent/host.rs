//! Host metrics from `/proc` and `statvfs`. Being written.
