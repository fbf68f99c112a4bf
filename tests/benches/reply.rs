//! Reply extraction speed and memory. Throughput of `Extractor` on a generated 100 MB job log
//! (runner format, a build's output in step_script, the chat_reply section at the very end),
//! compared in the same run with plain memchr scans of the same bytes. Goal: >= 1 GB/s and
//! within 2x of the scan. Then peak memory (VmHWM) of the release `chatops reply` on 1 MB and
//! 100 MB logs. Goal: < 32 MB, same order for both.

use chatops_core::reply::{extract, Entry, Extractor, Outcome, SectionKind};
use criterion::{BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;

const REPLY: &str = "deployed production in 42s";

/// A job log of about `size` bytes: header, many commands with compiler-like output (some
/// coloured, a few progress bars), the chat_reply section at the end.
fn job_log(size: usize) -> Vec<u8> {
    let mut log = Vec::with_capacity(size + 4096);
    log.extend_from_slice(b"\x1b[0KRunning with gitlab-runner 17.5.0 (8ec04662)\x1b[0;m\n");
    log.extend_from_slice(b"section_start:1730000000:prepare_executor\r\x1b[0K\x1b[0K\x1b[36;1mPreparing the \"docker\" executor\x1b[0;m\x1b[0;m\n");
    log.extend_from_slice(b"section_end:1730000001:prepare_executor\r\x1b[0K\x1b[0Ksection_start:1730000001:step_script\r\x1b[0K\x1b[0K\x1b[36;1mExecuting \"step_script\" stage of the job script\x1b[0;m\x1b[0;m\n");
    let mut i = 0u64;
    while log.len() < size {
        if i.is_multiple_of(5000) {
            log.extend_from_slice(
                format!("\x1b[32;1m$ make -C part{}\x1b[0;m\n", i / 5000).as_bytes(),
            );
        }
        match i % 100 {
            0 => log.extend_from_slice(
                format!("\x1b[1m\x1b[32m   Compiling\x1b[0m crate-{i} v1.0.{i}\n").as_bytes(),
            ),
            50 if i % 1000 == 50 => {
                log.extend_from_slice(b"Downloading 10%\rDownloading 60%\rDownloading 100%\n")
            }
            _ => log.extend_from_slice(
                format!("cc -O2 -c src/file_{i}.c -o build/file_{i}.o -Iinclude -Wall\n")
                    .as_bytes(),
            ),
        }
        i += 1;
    }
    log.extend_from_slice(format!("\x1b[32;1m$ ./deploy.sh\x1b[0;m\nsection_start:1730000900:chat_reply\r\x1b[0K\n{REPLY}\nsection_end:1730000900:chat_reply\r\x1b[0K\n").as_bytes());
    log.extend_from_slice(
        b"section_end:1730000901:step_script\r\x1b[0K\x1b[32;1mJob succeeded\x1b[0;m\n",
    );
    log
}

fn check(log: &[u8]) {
    let e = extract(log);
    match e.outcome {
        Outcome::Reply(r)
            if r.section == SectionKind::ChatReply
                && r.entries == [Entry::Output(REPLY.into())] => {}
        other => panic!("unexpected reply: {other:?}"),
    }
}

fn throughput(c: &mut Criterion) {
    let log = job_log(100 * 1024 * 1024);
    check(&log);
    let mut g = c.benchmark_group("reply_100MB");
    g.throughput(Throughput::Bytes(log.len() as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    for chunk in [64 * 1024, 1024 * 1024] {
        g.bench_with_input(
            BenchmarkId::new("extractor", format!("{}KiB_chunks", chunk / 1024)),
            &chunk,
            |b, &chunk| {
                b.iter(|| {
                    let mut x = Extractor::new();
                    for c in log.chunks(chunk) {
                        x.push(black_box(c));
                    }
                    black_box(x.finish())
                })
            },
        );
    }
    g.bench_function("memchr_newline_count", |b| {
        b.iter(|| memchr::memchr_iter(b'\n', black_box(&log)).count())
    });
    g.bench_function("memchr_cr_count", |b| {
        b.iter(|| memchr::memchr_iter(b'\r', black_box(&log)).count())
    });
    g.finish();
}

/// Peak resident memory of the release CLI on a generated log, in KiB.
fn cli_peak_kib(size: usize) -> u64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("job.log");
    std::fs::write(&path, job_log(size)).expect("write log");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chatops"))
        .args(["reply", path.to_str().expect("path")])
        .env("CHATOPS_PRINT_PEAK_MEMORY", "1")
        .output()
        .expect("run chatops");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{REPLY}\n"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak_memory_kib="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak memory in {stderr}"))
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    throughput(&mut c);
    c.final_summary();
    let small = cli_peak_kib(1024 * 1024);
    let large = cli_peak_kib(100 * 1024 * 1024);
    println!("reply peak memory (VmHWM of `chatops reply`): 1 MB log {small} KiB, 100 MB log {large} KiB");
}
