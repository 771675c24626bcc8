//! Fact collection over a fake machine in a temporary directory, and over
//! this real machine.

use std::fs;
use std::path::Path;

use gantry_agent::facts::{self, InterfaceAddress};
use gantry_api::{Disk, Facts};

fn put(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn address(interface: &str, ip: &str) -> InterfaceAddress {
    InterfaceAddress { interface: interface.to_string(), ip: ip.parse().unwrap() }
}

#[test]
fn collects_a_fake_machine() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put(root, "proc/sys/kernel/hostname", "web-01\n");
    put(root, "proc/sys/kernel/osrelease", "6.1.0-18-amd64\n");
    put(root, "proc/cpuinfo", "processor\t: 0\nmodel name\t: Xeon\n\nprocessor\t: 1\nmodel name\t: Xeon\n");
    put(root, "proc/meminfo", "MemTotal:        2048 kB\nMemFree: 1 kB\n");
    put(root, "proc/stat", "cpu 1 2 3\nbtime 1700000000\n");
    put(root, "etc/os-release", "NAME=Debian\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n");
    put(root, "sys/class/net/lo/address", "00:00:00:00:00:00\n");
    put(root, "sys/class/net/eth0/address", "02:FC:00:00:00:01\n");
    put(root, "sys/class/net/tun0/address", "\n");
    put(root, "sys/class/net/bond0/address", "02:fc:00:00:00:01\n");
    put(root, "sys/block/vda/size", "20971520\n");
    put(root, "sys/block/nvme0n1/size", "2\n");
    put(root, "sys/block/loop0/size", "100\n");
    put(root, "sys/block/zram0/size", "100\n");
    put(root, "sys/block/sr0/size", "0\n");
    put(root, "sys/class/dmi/id/sys_vendor", "QEMU\n");
    put(root, "sys/class/dmi/id/product_name", "Standard PC (Q35 + ICH9, 2009)\n");
    // product_serial is root-only on most machines: absent here.

    let addresses = [address("lo", "127.0.0.1"), address("eth0", "10.0.0.7"), address("eth0", "3.4.5.6")];
    let collected = facts::collect_from(root, &addresses);
    assert_eq!(collected.hostname, "web-01");
    assert_eq!(collected.problems, Vec::<String>::new());
    let expected = Facts {
        private_ips: vec!["10.0.0.7".to_string()],
        public_ips: vec!["3.4.5.6".to_string()],
        macs: vec!["02:fc:00:00:00:01".to_string()],
        make: Some("QEMU".to_string()),
        model: Some("Standard PC (Q35 + ICH9, 2009)".to_string()),
        serial: None,
        cpu_count: 2,
        cpu_model: Some("Xeon".to_string()),
        memory_bytes: 2048 * 1024,
        disks: vec![
            Disk { name: "nvme0n1".to_string(), size_bytes: 1024 },
            Disk { name: "vda".to_string(), size_bytes: 20971520 * 512 },
        ],
        kernel: Some("6.1.0-18-amd64".to_string()),
        os: Some("Debian GNU/Linux 12 (bookworm)".to_string()),
        boot_time: Some(1700000000),
    };
    assert_eq!(collected.facts, expected);
}

#[test]
fn an_empty_root_gives_empty_facts_and_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let collected = facts::collect_from(dir.path(), &[]);
    assert_eq!(collected.hostname, "");
    assert_eq!(collected.facts, Facts::default());
    let problems = collected.problems.join("\n");
    for file in
        ["/proc/sys/kernel/hostname", "/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/proc/sys/kernel/osrelease"]
    {
        assert!(problems.contains(file), "{file} not named in:\n{problems}");
    }
}

#[test]
fn falls_back_to_the_online_cpu_list_and_usr_lib_os_release() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put(root, "proc/cpuinfo", "vendor_id : odd\n");
    put(root, "sys/devices/system/cpu/online", "0-3\n");
    put(root, "usr/lib/os-release", "NAME=Fedora\nVERSION=40\n");
    put(root, "proc/meminfo", "MemFree: 1 kB\n");
    let collected = facts::collect_from(root, &[]);
    assert_eq!(collected.facts.cpu_count, 4);
    assert_eq!(collected.facts.os.as_deref(), Some("Fedora 40"));
    assert!(collected.problems.iter().any(|p| p == "/proc/meminfo has no MemTotal line"), "{:?}", collected.problems);
}

#[test]
fn this_machine_has_sane_facts() {
    let collected = facts::collect();
    let facts = &collected.facts;
    assert!(!collected.hostname.is_empty(), "{collected:?}");
    assert!(facts.cpu_count >= 1, "{collected:?}");
    assert!(facts.memory_bytes > 0, "{collected:?}");
    assert!(facts.kernel.is_some(), "{collected:?}");
    assert!(facts.boot_time.is_some_and(|t| t > 1_000_000_000), "{collected:?}");
    for ip in facts.private_ips.iter().chain(&facts.public_ips) {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        assert!(!ip.is_loopback(), "{collected:?}");
    }
    assert!(collected.problems.is_empty(), "{collected:?}");
}
