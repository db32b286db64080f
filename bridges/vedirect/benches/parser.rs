//! Parser throughput over the shared captures, printed as one JSON object.
//! `cargo bench -p vedirect`

use std::hint::black_box;
use std::time::Instant;
use vedirect::text::{Event, Parser};

fn load_captures() -> Vec<u8> {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/vedirect/captures"
    );
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("captures directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    names.sort();
    let mut all = Vec::new();
    for p in names {
        all.extend(std::fs::read(p).unwrap());
    }
    all
}

/// Run `f` over the corpus until at least `min_secs` elapsed; returns (MB/s, events/pass).
fn measure(corpus: &[u8], min_secs: f64, mut f: impl FnMut(&[u8]) -> usize) -> (f64, usize) {
    let events = f(corpus); // warm-up
    let start = Instant::now();
    let mut bytes = 0usize;
    while start.elapsed().as_secs_f64() < min_secs {
        black_box(f(black_box(corpus)));
        bytes += corpus.len();
    }
    (bytes as f64 / start.elapsed().as_secs_f64() / 1e6, events)
}

fn main() {
    // `cargo test --benches` runs this too; keep that pass short.
    let quick = std::env::args().any(|a| a == "--test" || a == "--quick");
    let secs = if quick { 0.05 } else { 2.0 };
    let corpus = load_captures();
    let (whole_mbps, events) = measure(&corpus, secs, |c| {
        let mut p = Parser::new();
        p.feed(c).count()
    });
    let (bytewise_mbps, _) = measure(&corpus, secs, |c| {
        let mut p = Parser::new();
        let mut n = 0;
        for chunk in c.chunks(1) {
            n += p.feed(chunk).count();
        }
        n
    });
    let (push_mbps, _) = measure(&corpus, secs, |c| {
        let mut p = Parser::new();
        c.iter()
            .filter_map(|&b| p.push(b))
            .filter(|e| matches!(e, Event::Block(_)))
            .count()
    });
    println!(
        "{{\"bench\":\"vedirect_parser\",\"corpus_bytes\":{},\"events_per_pass\":{},\
         \"whole_buffer_mb_per_s\":{:.1},\"one_byte_feed_mb_per_s\":{:.1},\
         \"push_per_byte_mb_per_s\":{:.1},\"parser_struct_bytes\":{}}}",
        corpus.len(),
        events,
        whole_mbps,
        bytewise_mbps,
        push_mbps,
        std::mem::size_of::<Parser>()
    );
}
