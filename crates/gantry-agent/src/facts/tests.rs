//! Unit tests of the fact parsers on text captured from real machines, and on
//! the odd inputs kernels and firmware produce.

use super::*;

const CPUINFO_X86: &str = "\
processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme de pse tsc msr
power management:

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
power management:

";

const CPUINFO_ARMV7: &str = "\
Processor\t: ARMv7 Processor rev 4 (v7l)
processor\t: 0
BogoMIPS\t: 38.40

processor\t: 1
BogoMIPS\t: 38.40

processor\t: 2
processor\t: 3
Hardware\t: BCM2835
";

const CPUINFO_ARM64_NO_MODEL: &str = "\
processor\t: 0
BogoMIPS\t: 243.75
CPU implementer\t: 0x41
CPU part\t: 0xd0c

processor\t: 1
BogoMIPS\t: 243.75
";

const CPUINFO_S390: &str = "\
vendor_id       : IBM/S390
# processors    : 4
bogomips per cpu: 3033.00
processor 0: version = FF,  identification = 0133E8,  machine = 2964
processor 1: version = FF,  identification = 0133E8,  machine = 2964
";

const CPUINFO_POWERPC: &str = "\
processor\t: 0
cpu\t\t: POWER9 (architected), altivec supported
clock\t\t: 2200.000000MHz

processor\t: 1
cpu\t\t: POWER9 (architected), altivec supported
";

#[test]
fn cpuinfo_counts_processors_and_finds_the_model() {
    let cases = [
        (CPUINFO_X86, 2, Some("AMD EPYC 7B13")),
        (CPUINFO_ARMV7, 4, Some("ARMv7 Processor rev 4 (v7l)")),
        (CPUINFO_ARM64_NO_MODEL, 2, None),
        (CPUINFO_S390, 4, None),
        (CPUINFO_POWERPC, 2, Some("POWER9 (architected), altivec supported")),
        ("", 0, None),
        ("garbage without colons\n\n", 0, None),
    ];
    for (text, count, model) in cases {
        let info = parse_cpuinfo(text);
        assert_eq!((info.count, info.model.as_deref()), (count, model), "{text}");
    }
}

#[test]
fn cpu_lists() {
    assert_eq!(parse_cpu_list("0-1\n"), Some(2));
    assert_eq!(parse_cpu_list("0-3,8,10-11"), Some(7));
    assert_eq!(parse_cpu_list("5"), Some(1));
    assert_eq!(parse_cpu_list(""), None);
    assert_eq!(parse_cpu_list("3-1"), None);
    assert_eq!(parse_cpu_list("a-b"), None);
}

#[test]
fn meminfo_total_in_bytes() {
    let text = "MemTotal:       24684092 kB\nMemFree:        22798164 kB\n";
    assert_eq!(parse_meminfo(text), Some(24684092 * 1024));
    // The first matching line counts; a line that only contains the word does not.
    assert_eq!(parse_meminfo("HugeMemTotal: 1 kB\nMemTotal: 2 kB\n"), Some(2048));
    assert_eq!(parse_meminfo("MemTotal: 7\n"), Some(7168));
    assert_eq!(parse_meminfo("MemTotal: 7 MB\n"), None);
    assert_eq!(parse_meminfo("MemTotal: lots kB\n"), None);
    assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
    assert_eq!(parse_meminfo("MemTotal: 18446744073709551615 kB\n"), None, "overflow is no value");
}

#[test]
fn boot_time_from_stat() {
    let stat = "cpu  1 2 3 4\ncpu0 1 2 3 4\nintr 123 0 0\nctxt 99\nbtime 1795473503\nprocesses 7\n";
    assert_eq!(parse_boot_time(stat), Some(1795473503));
    assert_eq!(parse_boot_time("cpu 1 2\n"), None);
    assert_eq!(parse_boot_time("btime soon\n"), None);
}

#[test]
fn os_release_names() {
    let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION=\"12 (bookworm)\"\nID=debian\n";
    assert_eq!(parse_os_release(debian).as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
    let cases = [
        // Single quotes, comments, spaces around the line.
        ("# comment\n  PRETTY_NAME='Alpine Linux v3.20'  \n", Some("Alpine Linux v3.20")),
        // Unquoted, and escapes inside double quotes.
        ("PRETTY_NAME=Arch\n", Some("Arch")),
        (r#"PRETTY_NAME="Say \"hi\" for \$5 \\ \q""#, Some(r#"Say "hi" for $5 \ \q"#)),
        // No PRETTY_NAME: NAME and VERSION, or NAME alone.
        ("NAME=Fedora\nVERSION=\"40 (Server)\"\n", Some("Fedora 40 (Server)")),
        ("NAME=Fedora\n", Some("Fedora")),
        // An empty PRETTY_NAME does not hide NAME; an unclosed quote runs to the end.
        ("PRETTY_NAME=\"\"\nNAME=\"Open", Some("Open")),
        ("ID=x\n", None),
        ("", None),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_os_release(text).as_deref(), expected, "{text}");
    }
}

#[test]
fn block_sizes_are_512_byte_sectors() {
    assert_eq!(parse_block_size("209715200\n"), Some(107374182400));
    assert_eq!(parse_block_size("0\n"), Some(0));
    assert_eq!(parse_block_size(""), None);
    assert_eq!(parse_block_size("-1"), None);
    assert_eq!(parse_block_size("18446744073709551615"), None);
    for name in ["loop0", "ram15", "zram0"] {
        assert!(is_virtual_block_device(name), "{name}");
    }
    for name in ["sda", "vda", "nvme0n1", "xvda", "dm-0", "md0"] {
        assert!(!is_virtual_block_device(name), "{name}");
    }
}

#[test]
fn macs() {
    assert_eq!(parse_mac("02:FC:00:00:00:01\n").as_deref(), Some("02:fc:00:00:00:01"));
    assert_eq!(parse_mac("00:00:00:00:00:00\n"), None);
    assert_eq!(parse_mac("\n"), None);
    assert_eq!(parse_mac("not a mac"), None);
    assert_eq!(parse_mac("0:1:2:3:4:5"), None);
    // InfiniBand addresses are 20 octets.
    let ib = "80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0f:e4:b1";
    assert_eq!(parse_mac(ib).as_deref(), Some(ib));
}

#[test]
fn dmi_placeholders_are_no_value() {
    assert_eq!(parse_dmi("Dell Inc.\n").as_deref(), Some("Dell Inc."));
    assert_eq!(parse_dmi("  PowerEdge R640 \n").as_deref(), Some("PowerEdge R640"));
    for junk in
        ["", "\n", "To Be Filled By O.E.M.\n", "Default string", "Not Specified", "None", "System Serial Number"]
    {
        assert_eq!(parse_dmi(junk), None, "{junk:?}");
    }
}

#[test]
fn addresses_are_classified() {
    let cases = [
        ("10.1.2.3", Some(AddressScope::Private)),
        ("172.16.0.1", Some(AddressScope::Private)),
        ("172.31.255.254", Some(AddressScope::Private)),
        ("172.32.0.1", Some(AddressScope::Public)),
        ("192.168.1.1", Some(AddressScope::Private)),
        ("100.64.0.1", Some(AddressScope::Private)),
        ("100.127.255.254", Some(AddressScope::Private)),
        ("100.128.0.1", Some(AddressScope::Public)),
        ("100.63.255.255", Some(AddressScope::Public)),
        ("8.8.8.8", Some(AddressScope::Public)),
        ("127.0.0.1", None),
        ("127.8.9.10", None),
        ("169.254.169.254", None),
        ("0.0.0.0", None),
        ("224.0.0.1", None),
        ("255.255.255.255", None),
        ("fd12:3456::1", Some(AddressScope::Private)),
        ("fc00::1", Some(AddressScope::Private)),
        ("2001:db8::1", Some(AddressScope::Public)),
        ("2600:1f18::7", Some(AddressScope::Public)),
        ("::1", None),
        ("::", None),
        ("fe80::1", None),
        ("febf::1", None),
        ("fec0::1", Some(AddressScope::Public)),
        ("ff02::1", None),
        ("::ffff:10.0.0.1", Some(AddressScope::Private)),
        ("::ffff:127.0.0.1", None),
    ];
    for (ip, scope) in cases {
        assert_eq!(classify_ip(ip.parse().unwrap()), scope, "{ip}");
    }
}

#[test]
fn addresses_split_sorted_without_repeats() {
    let addresses: Vec<InterfaceAddress> = [
        ("lo", "127.0.0.1"),
        ("eth0", "10.0.0.7"),
        ("eth0", "fe80::1"),
        ("eth0", "54.1.2.3"),
        ("eth1", "10.0.0.5"),
        ("eth1", "2001:db8::5"),
        ("bond0", "10.0.0.5"),
        ("lo", "::1"),
    ]
    .into_iter()
    .map(|(interface, ip)| InterfaceAddress { interface: interface.to_string(), ip: ip.parse().unwrap() })
    .collect();
    let (private, public) = split_addresses(&addresses);
    assert_eq!(private, ["10.0.0.5", "10.0.0.7"]);
    assert_eq!(public, ["54.1.2.3", "2001:db8::5"]);
}

#[test]
fn shell_words() {
    assert_eq!(shell_unquote(r#"a\ b"#), "a b");
    assert_eq!(shell_unquote(r#"'a\b'"#), r"a\b");
    assert_eq!(shell_unquote(r#""x"'y'z"#), "xyz");
    assert_eq!(shell_unquote(r#""trailing\"#), r"trailing\");
}
