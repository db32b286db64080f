//! Percentiles, and where results go.

use std::path::{Path, PathBuf};

/// The value at percentile `p` (0..=100) of `sorted`, nearest rank; `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    Some(sorted[rank.min(sorted.len() - 1)])
}

/// `target/bench/` beside the running binary (`target/release/pvbus-bench`).
pub fn bench_dir(exe: &Path) -> PathBuf {
    exe.parent()
        .and_then(Path::parent)
        .map(|target| target.join("bench"))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Pretty JSON to stdout and to `dir/name`.
pub fn write_json(dir: &Path, name: &str, value: &serde_json::Value) -> anyhow::Result<PathBuf> {
    let text = serde_json::to_string_pretty(value)?;
    println!("{text}");
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    std::fs::write(&path, text + "\n")?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(51.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
