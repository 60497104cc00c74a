//! The Lua scripts, one per operation, each atomic on the server. Their
//! text lives in `scripts/*.lua`; each runs after `prelude.lua`, which
//! holds what they share (reading a value that may be missing or of another
//! type, the server clock, moving a generation on).

use redis::Script;

/// Every operation's script, hashed once.
pub(super) struct Scripts {
    pub(super) verify: Script,
    pub(super) lookup: Script,
    pub(super) fill: Script,
    pub(super) invalidate: Script,
    pub(super) begin_write: Script,
    pub(super) end_write: Script,
    pub(super) tag_fill: Script,
    pub(super) tag_invalidate: Script,
    /// Their texts, to load them when a connection is made.
    texts: Vec<String>,
}

const PRELUDE: &str = include_str!("scripts/prelude.lua");

impl Scripts {
    pub(super) fn new() -> Self {
        let mut texts = Vec::new();
        let mut script = |body: &str| {
            let text = format!("{PRELUDE}\n{body}");
            let script = Script::new(&text);
            texts.push(text);
            script
        };
        Self {
            verify: script(include_str!("scripts/verify.lua")),
            lookup: script(include_str!("scripts/lookup.lua")),
            fill: script(include_str!("scripts/fill.lua")),
            invalidate: script(include_str!("scripts/invalidate.lua")),
            begin_write: script(include_str!("scripts/begin_write.lua")),
            end_write: script(include_str!("scripts/end_write.lua")),
            tag_fill: script(include_str!("scripts/tag_fill.lua")),
            tag_invalidate: script(include_str!("scripts/tag_invalidate.lua")),
            texts,
        }
    }

    /// `SCRIPT LOAD` of every script, in one round trip.
    pub(super) fn load(&self) -> redis::Pipeline {
        let mut pipeline = redis::pipe();
        for text in &self.texts {
            pipeline.cmd("SCRIPT").arg("LOAD").arg(text).ignore();
        }
        pipeline
    }
}
