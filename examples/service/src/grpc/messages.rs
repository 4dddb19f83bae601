// The messages of `proto/example.proto`, written as prost structs (what prost-build would
// generate), shared by the service and its tests.

/// `Work`'s request: how long to work.
#[derive(Clone, Copy, PartialEq, ::prost::Message)]
pub struct WorkRequest {
    /// Milliseconds.
    #[prost(uint64, tag = "1")]
    pub ms: u64,
}

/// `Work`'s answer.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct WorkReply {
    /// "done".
    #[prost(string, tag = "1")]
    pub answer: ::prost::alloc::string::String,
}

/// `Ticks`' request.
#[derive(Clone, Copy, PartialEq, ::prost::Message)]
pub struct TicksRequest {
    /// How many ticks.
    #[prost(uint32, tag = "1")]
    pub count: u32,
    /// Milliseconds between ticks.
    #[prost(uint64, tag = "2")]
    pub interval_ms: u64,
}

/// One tick.
#[derive(Clone, Copy, PartialEq, ::prost::Message)]
pub struct Tick {
    /// Its number, from 0.
    #[prost(uint32, tag = "1")]
    pub n: u32,
}
