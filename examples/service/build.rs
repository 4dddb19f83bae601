//! Generates the tonic code of the example's gRPC service (`proto/example.proto`) with tonic's
//! manual builder: no `protoc` needed on the machine (a fresh one has none), and the messages
//! are plain prost structs in `src/grpc/messages.rs`. The server goes in `$OUT_DIR/server`, the
//! client (used by the tests) in `$OUT_DIR/client`.

use tonic_build::manual::{Builder, Method, Service};

fn main() {
    let method = |name: &str, route: &str, input: &str, output: &str| {
        Method::builder()
            .name(name)
            .route_name(route)
            .input_type(format!("super::{input}"))
            .output_type(format!("super::{output}"))
            .codec_path("tonic_prost::ProstCodec")
    };
    let service = Service::builder()
        .name("Example")
        .package("example.v1")
        .method(method("work", "Work", "WorkRequest", "WorkReply").build())
        .method(
            method("ticks", "Ticks", "TicksRequest", "Tick")
                .server_streaming()
                .build(),
        )
        .build();
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    for (dir, server) in [("server", true), ("client", false)] {
        let dir = out.join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        Builder::new()
            .build_server(server)
            .build_client(!server)
            .build_transport(false)
            .out_dir(&dir)
            .compile(std::slice::from_ref(&service));
    }
    println!("cargo:rerun-if-changed=build.rs");
}
