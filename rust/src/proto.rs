//! Protobuf types generated at build time from `proto/aimesh.proto`.
#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/aimesh.v1.rs"));
