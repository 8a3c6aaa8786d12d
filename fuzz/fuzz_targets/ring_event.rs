//! Any bytes as a ring entry: decoding never panics, and every decoded event becomes a
//! journal line that is one line of valid JSON the ingester accepts (the journal contract
//! holds whatever the kernel side puts in a record).
#![no_main]

use decnet::{
    collector::{
        FlowTimes, JournalRecord, SummaryTimes, write_flow_record, write_outcome_record,
        write_probe_record, write_suppressed_record,
    },
    ingest::parse,
    sensor::{FloodBudget, Probe},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Probe::decode(data) else {
        return;
    };
    let mut out = Vec::new();
    let decky = "web\u{1b}\"\\";
    let at = 1_790_000_000_000_000_000;
    if let Some(s) = &p.suppressed {
        let times = SummaryTimes {
            at,
            first: at,
            last: at,
        };
        write_suppressed_record(
            &mut out,
            &p,
            s,
            s.summary.suppressed,
            decky,
            times,
            FloodBudget::default(),
            None,
        );
    } else if let Some(o) = &p.outcome {
        write_outcome_record(&mut out, &p, o, decky, at, at - 1000, None);
    } else if let Some(f) = &p.flow {
        let times = FlowTimes {
            at,
            first: at,
            last: at,
        };
        write_flow_record(&mut out, &p, f, decky, times, None);
    } else {
        write_probe_record(&mut out, &p, decky, at, None);
    }
    let (last, line) = out.split_last().expect("a record");
    assert_eq!(*last, b'\n', "a record ends its line");
    assert!(
        !line.contains(&b'\n'),
        "one line: {}",
        String::from_utf8_lossy(line)
    );
    let rec: JournalRecord = serde_json::from_slice(line)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(line)));
    assert_eq!(rec.decky, decky);
    parse::parse_line(line).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(line)));
});
