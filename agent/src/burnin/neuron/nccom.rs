//! `nccom-test`: an all-reduce across every NeuronCore of the node, with `--check`, whose bus
//! bandwidth is the node's collective figure. Its command line and output are those of AWS's
//! NCCOM-TEST user guide (`tools/neuron-sys-tools/nccom-test.rst`): a table with one row per
//! size, `size(B) count(elems) type time(us) algbw(GB/s) busbw(GB/s)`, then
//! `Avg bus bandwidth: 40.6901GB/s`. A size that failed has a message in place of its
//! figures, and the run ends `N errors found - test failed`.

/// The all-reduce the burn-in runs: fp32, because `--check` only checks fp32; from 64 MiB
/// to 1 GiB doubling, where the bus bandwidth reaches what the links carry.
pub fn args(ranks: u32) -> Vec<String> {
    [
        "--nworkers",
        &ranks.to_string(),
        "--minbytes",
        "64MB",
        "--maxbytes",
        "1GB",
        "--stepfactor",
        "2",
        "--iters",
        "20",
        "--warmup_iters",
        "5",
        "--datatype",
        "fp32",
        "--check",
        "all_reduce",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// What one run of nccom-test showed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Collective {
    /// (size in bytes, bus bandwidth in GB/s) of each size that ran.
    pub rows: Vec<(u64, f64)>,
    /// Sizes whose check found a wrong result.
    pub wrong_results: u64,
    /// Messages of sizes that did not run at all ("Failure running neuron-bench - log file
    /// ..."): the collective could not be measured there, which is not a wrong result.
    pub failures: Vec<String>,
    /// `Avg bus bandwidth`, as printed.
    pub average_busbw: Option<f64>,
}

impl Collective {
    /// The bus bandwidth at the largest size that ran: the sustained figure, which the small
    /// sizes in the average would pull down.
    pub fn busbw(&self) -> Option<f64> {
        self.rows
            .iter()
            .max_by_key(|(size, _)| *size)
            .map(|(_, busbw)| *busbw)
    }
}

/// Reads nccom-test's output (stdout and stderr together).
///
/// A failed size's row is its size and a message. The guide shows one such message, for a
/// run that failed ("Failure running neuron-bench"); what `--check` prints for a wrong
/// result is not shown there, so any other message counts as a wrong result, and so does
/// every error in the closing `N errors found` beyond the rows that failed to run: an error
/// under `--check` that is not a failure to run is a wrong result.
pub fn parse(output: &str) -> Collective {
    let mut run = Collective::default();
    let mut errors_found = None;
    let mut row_errors = 0u64;
    for line in output.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Avg bus bandwidth:") {
            run.average_busbw = rest.trim().trim_end_matches("GB/s").trim().parse().ok();
            continue;
        }
        if let Some(n) = errors_count(line) {
            errors_found = Some(n);
            continue;
        }
        let mut fields = line.split_whitespace();
        let Some(size) = fields.next().and_then(|f| f.parse::<u64>().ok()) else {
            continue;
        };
        let rest: Vec<&str> = fields.collect();
        if let [_count, _kind, _time, _algbw, busbw] = rest[..]
            && let Ok(busbw) = busbw.parse::<f64>()
        {
            run.rows.push((size, busbw));
            continue;
        }
        let message = rest.join(" ");
        if message.is_empty() {
            continue;
        }
        row_errors += 1;
        if is_failure_to_run(&message) {
            run.failures.push(format!("{size} B: {message}"));
        } else {
            run.wrong_results += 1;
        }
    }
    if let Some(n) = errors_found {
        // Errors the rows did not show are check failures; the rows' own are counted above.
        run.wrong_results += n.saturating_sub(row_errors);
    }
    run
}

/// `1 errors found - test failed`.
fn errors_count(line: &str) -> Option<u64> {
    let (n, rest) = line.split_once(char::is_whitespace)?;
    let rest = rest.trim_start();
    if rest.starts_with("errors found") || rest.starts_with("error found") {
        n.parse().ok()
    } else {
        None
    }
}

fn is_failure_to_run(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("failure running") || m.contains("failed to run") || m.contains("timed out")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_average() {
        let out = "     size(B)    count(elems)     type    time(us)    algbw(GB/s)    busbw(GB/s)\n\
                   33554432        33554432    uint8         768          40.69          40.69\n\
                   Avg bus bandwidth:      40.6901GB/s\n";
        let run = parse(out);
        assert_eq!(run.rows, [(33554432, 40.69)]);
        assert_eq!(run.average_busbw, Some(40.6901));
        assert_eq!(run.busbw(), Some(40.69));
        assert_eq!(run.wrong_results, 0);
    }

    #[test]
    fn an_error_count_without_a_row_is_a_wrong_result() {
        let out = "67108864 16777216 fp32 1214 51.48 51.48\n1 errors found - test failed\n";
        let run = parse(out);
        assert_eq!(run.wrong_results, 1);
        assert!(run.failures.is_empty());
    }

    #[test]
    fn the_command_asks_for_a_checked_fp32_all_reduce() {
        let args = args(64);
        assert!(args.windows(2).any(|w| w == ["--nworkers", "64"]));
        assert!(args.windows(2).any(|w| w == ["--datatype", "fp32"]));
        assert!(args.contains(&"--check".to_string()));
        assert_eq!(args.last().map(String::as_str), Some("all_reduce"));
    }
}
