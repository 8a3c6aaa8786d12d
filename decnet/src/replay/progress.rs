//! The replay's progress on a terminal: frames, bytes, rate and time left, on stderr.
//!
//! Drawn only when stderr is a terminal, so nothing of it reaches a pipe, a log file or
//! the `--json` output on stdout.

use std::{io::IsTerminal, time::Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Frames between two updates: the bar costs nothing per frame.
const EVERY: u64 = 4096;

pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    /// Bytes of the files already finished (the bar spans all of them).
    done_bytes: u64,
}

impl Progress {
    /// A bar over `total_bytes` (all files), drawn only on a terminal.
    pub fn new(total_bytes: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(total_bytes),
                ProgressDrawTarget::stderr_with_hz(4),
            );
            let style = ProgressStyle::with_template(
                "{prefix:.bold} {bar:24} {bytes}/{total_bytes} {msg}, {eta} left",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_message("0 frames");
            bar
        });
        Self {
            bar,
            started: Instant::now(),
            done_bytes: 0,
        }
    }

    /// Notes the position within the current file; cheap unless a whole step has passed.
    pub fn frame(&self, name: &str, frames: u64, file_bytes: u64) {
        let Some(bar) = &self.bar else { return };
        if !frames.is_multiple_of(EVERY) {
            return;
        }
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        bar.set_prefix(name.to_owned());
        bar.set_position(self.done_bytes + file_bytes);
        bar.set_message(format!("{frames} frames at {:.0}/s", frames as f64 / secs));
    }

    /// A file was read to its end (`bytes` long).
    pub fn file_done(&mut self, bytes: u64) {
        self.done_bytes += bytes;
        if let Some(bar) = &self.bar {
            bar.set_position(self.done_bytes);
        }
    }

    /// Says what comes after the capture (ingest, profiles) in place of the bar.
    pub fn finish(&self, next: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            eprintln!("{next}");
        }
    }
}
