// Generates the Rust protobuf types from proto/aimesh.proto at build time,
// with a vendored protoc so no system install is needed.
fn main() {
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc");
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/aimesh.proto");
    let mut config = prost_build::Config::new();
    // BTreeMap keeps map fields in key order, so encoding is deterministic
    // and byte-identical to other languages' deterministic serializers.
    config.btree_map(["."]);
    config
        .compile_protos(&["proto/aimesh.proto"], &["proto"])
        .expect("compile proto/aimesh.proto");
}
