//! The log file's rotation, tail and follower, driven synchronously (the
//! follower's `poll` is the whole of `follow` but the timer).

use super::*;

fn files(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len())
        })
        .collect();
    files.sort();
    files
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn a_chunk_is_cut_at_its_last_line_break_that_fits() {
    assert_eq!(fitting(b"abc\ndef\n", 100, false), 8, "fits whole");
    assert_eq!(fitting(b"abc\ndef\n", 6, false), 4, "up to the line break");
    assert_eq!(fitting(b"abcdef\n", 6, false), 0, "no line break fits: rotate first");
    assert_eq!(fitting(b"abcdef\n", 6, true), 6, "an empty file takes what fits");
    assert_eq!(fitting(b"abc", 0, true), 1, "always progress");
}

#[test]
fn rotation_keeps_whole_lines_and_the_newest_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogFile::new(dir.path(), "web", 10, 2);
    for line in ["aaaa\n", "bbbb\n", "cccc\n", "dddd\n", "eeee\n", "ff\ngg\nhh\n"] {
        log.write(line.as_bytes());
    }
    assert_eq!(log.problem(), None);
    assert_eq!(files(dir.path()), [("web.log".into(), 6), ("web.log.1".into(), 8), ("web.log.2".into(), 10)]);
    assert_eq!(read(dir.path().join("web.log.2")), "cccc\ndddd\n");
    assert_eq!(read(dir.path().join("web.log.1")), "eeee\nff\n");
    assert_eq!(read(dir.path().join("web.log")), "gg\nhh\n");

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("web.log")).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode & 0o600, mode & !0o640), (0o600, 0), "created 0640 (less the umask): {mode:o}");
}

#[test]
fn a_line_longer_than_a_file_is_split_and_keep_zero_keeps_only_the_live_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogFile::new(dir.path(), "job", 4, 0);
    log.write(b"0123456789");
    assert_eq!(files(dir.path()), [("job.log".into(), 2)]);
    assert_eq!(read(log_path(dir.path(), "job")), "89");
}

#[test]
fn notes_start_on_a_line_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogFile::new(dir.path(), "web", 1000, 1);
    log.note("started pid 7");
    log.write(b"no newline");
    log.note("exited");
    let text = read(log_path(dir.path(), "web"));
    assert_eq!(text, "--- gantry: started pid 7 ---\nno newline\n--- gantry: exited ---\n");
}

#[test]
fn an_unwritable_directory_is_a_problem_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "").unwrap();
    let mut log = LogFile::new(&blocker, "web", 1000, 1);
    log.write(b"lost\n");
    let problem = log.problem().unwrap();
    assert!(problem.starts_with(&format!("writing {}/web.log: ", blocker.display())), "{problem}");
}

#[test]
fn the_tail_spans_rotated_files_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogFile::new(dir.path(), "web", 10, 3);
    let all: String = (0..12).map(|i| format!("line{i:02}\n")).collect();
    log.write(all.as_bytes());
    let kept = read_tail(dir.path(), "web", u64::MAX).unwrap();
    assert_eq!(String::from_utf8(kept).unwrap(), all[all.len() - 28..], "4 files of 7 bytes");
    let tail = read_tail(dir.path(), "web", 10).unwrap();
    assert_eq!(String::from_utf8(tail).unwrap(), "10\nline11\n");
    assert_eq!(read_tail(dir.path(), "web", 0).unwrap(), b"");

    let error = read_tail(dir.path(), "db", 100).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::NotFound);
    assert_eq!(error.to_string(), format!("no log at {}/db.log", dir.path().display()));
}

#[test]
fn the_follower_reads_on_across_rotation_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(dir.path(), "web");
    let mut follower = Follower::new(path.clone(), 3);
    assert_eq!(follower.poll().unwrap(), b"", "no file yet");

    let mut log = LogFile::new(dir.path(), "web", 8, 2);
    log.write(b"abc\n");
    assert_eq!(follower.poll().unwrap(), b"abc\n", "a file that appears later is read from its start");
    assert_eq!(follower.poll().unwrap(), b"");

    // Written and rotated between two polls: the old file's rest, then the new file.
    log.write(b"def\n");
    log.write(b"ghi\n");
    assert_eq!(follower.poll().unwrap(), b"def\n");
    assert_eq!(follower.poll().unwrap(), b"ghi\n");
    assert_eq!(follower.poll().unwrap(), b"");

    // Cut in place: read again from the start.
    std::fs::write(&path, "x\n").unwrap();
    assert_eq!(follower.poll().unwrap(), b"x\n");

    // Replaced by an unrelated file: its start.
    std::fs::remove_file(&path).unwrap();
    assert_eq!(follower.poll().unwrap(), b"", "no live file for a moment");
    std::fs::write(&path, "new\n").unwrap();
    assert_eq!(follower.poll().unwrap(), b"new\n");
}

#[test]
fn the_follower_starts_at_the_offset_unless_it_is_past_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(dir.path(), "web");
    std::fs::write(&path, "old\nnew\n").unwrap();
    assert_eq!(Follower::new(path.clone(), 4).poll().unwrap(), b"new\n");
    assert_eq!(Follower::new(path.clone(), 8).poll().unwrap(), b"");
    assert_eq!(Follower::new(path, 100).poll().unwrap(), b"old\nnew\n", "a shorter file is another file");
}
