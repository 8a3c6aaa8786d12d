//! Userspace pipeline counters. Every place an event can be lost has one, so that
//! kernel emitted + swept summaries (flood guard and flows) == ring read + swept summaries
//! == journal written + counted drops + merged summaries can be checked at any time.

crate::counters! {
    /// The sensor and journal's counters.
    pub struct PipelineStats => PipelineSnapshot {
        counters {
            /// Entries taken off the ring.
            ring_read("ring_read_total", "Ring entries read by userspace."),
            /// Ring entries that did not decode (short or unknown kind).
            decode_errors("decode_errors_total", "Ring entries that did not decode."),
            /// Probes dropped because the reader -> writer channel was full.
            channel_full_dropped(
                "channel_full_dropped_total",
                "Journal lines dropped because the writer channel was full."
            ),
            /// Journal lines written (handed to write(2) successfully).
            journal_written("journal_written_total", "Journal lines written."),
            /// Journal lines lost to write errors (disk full, I/O error).
            journal_write_failed(
                "journal_write_failed_total",
                "Journal lines lost to write errors."
            ),
            journal_bytes("journal_bytes_total", "Bytes written to the journal."),
            /// Journal lines deleted unread: a rotated file past the limit of files held
            /// for a stalled ingester (`collector::rotation`).
            journal_rotated_unread(
                "journal_rotated_unread_total",
                "Journal lines deleted by rotation before the ingester read them."
            ),
            /// Flood-guard summaries written by the userspace sweep (not from the ring).
            summaries_swept(
                "summaries_swept_total",
                "Flood-guard summaries written by the userspace sweep of quiet sources."
            ),
            /// Kernel flood-guard summaries with nothing new (a sweep had reported their
            /// counts, or a later total of the same entry, when the ring reader lagged): read
            /// from the ring, deliberately not written.
            summaries_merged(
                "summaries_merged_total",
                "Kernel flood-guard summaries a sweep had already reported (not written)."
            ),
            /// Withheld events the written `source_suppressed` records account for (the sum
            /// of their `suppressed`): once a flood has been quiet for a second this equals
            /// the kernel's `suppressed` counter.
            suppressed_reported(
                "suppressed_reported_total",
                "Withheld events accounted for by written source_suppressed records."
            ),
            /// `tcp_flow` summaries written by the userspace flow sweep (idle, evicted,
            /// shutdown).
            flows_swept(
                "flows_swept_total",
                "tcp_flow summaries written by the userspace sweep (idle, evicted, shutdown)."
            ),
            /// Flows not watched for idle/eviction because the watch list was full (their
            /// kernel summary on FIN/RST still comes).
            flows_unwatched(
                "flows_unwatched_total",
                "Flows not watched for idle/eviction because the watch list was full."
            ),
        }
        gauges {
            /// Rotated journal files kept beyond `--journal-keep` because the ingester has
            /// not finished them.
            journal_held_files(
                "journal_held_files",
                "Rotated journal files kept beyond --journal-keep for the ingester."
            ),
        }
        state {}
        computed {}
    }
}
