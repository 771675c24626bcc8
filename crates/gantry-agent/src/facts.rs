//! This machine's facts, as ohai or facter report them: hostname, addresses,
//! MACs, make and model, CPUs, memory, disks, kernel, OS and boot time.
//!
//! Pure parsers turn the text of `/proc`, `/sys` and `/etc` files into
//! values; [`collect_from`] reads those files under a root directory (`/` for
//! the real machine, a fake tree in tests, the host's root when the agent
//! runs in a container with it mounted); [`collect`] reads this machine.
//!
//! Collection never fails as a whole: a fact that cannot be read is left
//! empty, and when the file is one every Linux machine has, the reason is
//! added to [`Collected::problems`] for the caller to log.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use gantry_api::{Disk, Facts};

/// What [`collect`] or [`collect_from`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Collected {
    /// The kernel's hostname (`/proc/sys/kernel/hostname`); empty when unreadable.
    pub hostname: String,
    pub facts: Facts,
    /// Facts that every Linux machine should have but could not be read,
    /// one sentence each (`"reading /proc/meminfo: permission denied"`).
    pub problems: Vec<String>,
}

/// One address of one network interface, as the kernel lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub interface: String,
    pub ip: IpAddr,
}

/// Whether an address can be reached from outside the private network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressScope {
    /// RFC 1918 (10/8, 172.16/12, 192.168/16), CGNAT 100.64/10, and IPv6
    /// unique local addresses fc00::/7.
    Private,
    Public,
}

/// Facts of this machine: files under `/`, addresses from the kernel.
pub fn collect() -> Collected {
    let (addresses, problem) = match interface_addresses() {
        Ok(addresses) => (addresses, None),
        Err(e) => (Vec::new(), Some(format!("listing interface addresses: {e}"))),
    };
    let mut collected = collect_from(Path::new("/"), &addresses);
    collected.problems.extend(problem);
    collected
}

/// Every address of every interface of this machine (`getifaddrs`).
pub fn interface_addresses() -> io::Result<Vec<InterfaceAddress>> {
    Ok(if_addrs::get_if_addrs()?.into_iter().map(|i| InterfaceAddress { ip: i.ip(), interface: i.name }).collect())
}

/// Facts from the files under `root` (which has `proc/`, `sys/` and `etc/`)
/// and the given interface addresses.
pub fn collect_from(root: &Path, addresses: &[InterfaceAddress]) -> Collected {
    let mut reader = Reader { root, problems: Vec::new() };
    let hostname = reader.required("proc/sys/kernel/hostname").as_deref().and_then(parse_hostname);

    let cpu = reader.required("proc/cpuinfo").map(|text| parse_cpuinfo(&text)).unwrap_or_default();
    // Some kernels (s390, odd ARM builds) list no "processor" lines; the
    // online CPU list is always there.
    let cpu_count = match cpu.count {
        0 => reader.optional("sys/devices/system/cpu/online").as_deref().and_then(parse_cpu_list).unwrap_or(0),
        n => n,
    };
    if cpu_count == 0 {
        reader.problems.push("no CPUs listed in /proc/cpuinfo or /sys/devices/system/cpu/online".to_string());
    }
    let memory_bytes = reader.required_parsed("proc/meminfo", parse_meminfo, "no MemTotal line").unwrap_or(0);
    let boot_time = reader.required_parsed("proc/stat", parse_boot_time, "no btime line");
    let kernel = reader.required("proc/sys/kernel/osrelease").as_deref().and_then(non_empty);
    // os-release(5): /etc/os-release, or /usr/lib/os-release when it is absent.
    let os = reader
        .optional("etc/os-release")
        .or_else(|| reader.optional("usr/lib/os-release"))
        .as_deref()
        .and_then(parse_os_release);

    let (private_ips, public_ips) = split_addresses(addresses);
    let facts = Facts {
        private_ips,
        public_ips,
        macs: reader.macs(),
        make: reader.dmi("sys_vendor"),
        model: reader.dmi("product_name"),
        serial: reader.dmi("product_serial"),
        cpu_count,
        cpu_model: cpu.model,
        memory_bytes,
        disks: reader.disks(),
        kernel,
        os,
        boot_time,
    };
    Collected { hostname: hostname.unwrap_or_default(), facts, problems: reader.problems }
}

/// The hostname file's text, trimmed; `None` when empty.
pub fn parse_hostname(text: &str) -> Option<String> {
    non_empty(text)
}

/// CPUs and their model as `/proc/cpuinfo` lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuInfo {
    /// Logical CPUs: the `processor` entries.
    pub count: u32,
    /// The first CPU's model, under the key its architecture uses.
    pub model: Option<String>,
}

/// Parses `/proc/cpuinfo`. x86 and ARM list one `processor : N` block per
/// logical CPU; s390 says `# processors : N` and lists `processor N: ...`.
pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    // Model keys by architecture: x86 and arm64 with a model name, 32-bit
    // ARM, MIPS, PowerPC, RISC-V. The first one found wins.
    const MODEL_KEYS: &[&str] = &["model name", "Processor", "cpu model", "cpu", "uarch"];
    let mut count = 0u32;
    let mut declared = None;
    let mut models: Vec<(usize, String)> = Vec::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let (key, value) = (key.trim(), value.trim());
        // `processor : 0` (x86, ARM) or `processor 0: version = ...` (s390),
        // but not 32-bit ARM's `Processor : ARMv7 ...`, which is a model.
        let is_processor = key == "processor"
            || key.strip_prefix("processor ").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if is_processor {
            count += 1;
        } else if key == "# processors" {
            declared = value.parse().ok();
        } else if let Some(rank) = MODEL_KEYS.iter().position(|k| *k == key)
            && !value.is_empty()
            && !models.iter().any(|(r, _)| *r == rank)
        {
            models.push((rank, value.to_string()));
        }
    }
    let model = models.into_iter().min_by_key(|(rank, _)| *rank).map(|(_, m)| m);
    CpuInfo { count: declared.unwrap_or(count), model }
}

/// Counts the CPUs in a kernel CPU list such as `0-3,8,10-11` (7 CPUs).
pub fn parse_cpu_list(text: &str) -> Option<u32> {
    let mut count = 0u32;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let n = part.parse::<u32>().ok()?;
                (n, n)
            }
        };
        count += last.checked_sub(first)? + 1;
    }
    (count > 0).then_some(count)
}

/// `MemTotal` of `/proc/meminfo`, in bytes (the file counts in KiB, `kB`).
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let value = field(text, "MemTotal:")?;
    let kib = match value.split_whitespace().collect::<Vec<_>>()[..] {
        [n] | [n, "kB"] => n.parse::<u64>().ok()?,
        _ => return None,
    };
    kib.checked_mul(1024)
}

/// `btime` of `/proc/stat`: when the machine booted, in Unix seconds.
pub fn parse_boot_time(text: &str) -> Option<u64> {
    field(text, "btime ")?.trim().parse().ok()
}

/// The OS's name from os-release(5): `PRETTY_NAME`, else `NAME VERSION`,
/// else `NAME`. Values may be quoted and escaped like shell words.
pub fn parse_os_release(text: &str) -> Option<String> {
    let mut pretty = None;
    let mut name = None;
    let mut version = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        let slot = match key.trim() {
            "PRETTY_NAME" => &mut pretty,
            "NAME" => &mut name,
            "VERSION" => &mut version,
            _ => continue,
        };
        *slot = non_empty(&shell_unquote(value));
    }
    pretty.or_else(|| match (name, version) {
        (Some(name), Some(version)) => Some(format!("{name} {version}")),
        (name, _) => name,
    })
}

/// A block device's size from `/sys/block/<dev>/size`, which counts 512-byte
/// sectors whatever the device's own sector size.
pub fn parse_block_size(text: &str) -> Option<u64> {
    text.trim().parse::<u64>().ok()?.checked_mul(512)
}

/// Whether a block device is a kernel construct rather than a disk: loop
/// devices, RAM disks and compressed swap in RAM.
pub fn is_virtual_block_device(name: &str) -> bool {
    ["loop", "ram", "zram"].iter().any(|prefix| name.starts_with(prefix))
}

/// A MAC from `/sys/class/net/<if>/address`, lowercase; `None` when the
/// interface has none (empty, or all zero as on loopback and tunnels).
pub fn parse_mac(text: &str) -> Option<String> {
    let mac = text.trim().to_ascii_lowercase();
    let octets: Vec<&str> = mac.split(':').collect();
    let well_formed =
        octets.len() >= 6 && octets.iter().all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()));
    (well_formed && octets.iter().any(|o| *o != "00")).then_some(mac)
}

/// A DMI string (`/sys/class/dmi/id/*`), trimmed; `None` when empty or one of
/// the placeholders firmware vendors leave in unset fields.
pub fn parse_dmi(text: &str) -> Option<String> {
    const PLACEHOLDERS: &[&str] = &[
        "to be filled by o.e.m.",
        "default string",
        "not specified",
        "not applicable",
        "not available",
        "none",
        "system serial number",
        "0123456789",
    ];
    let value = non_empty(text)?;
    (!PLACEHOLDERS.contains(&value.to_ascii_lowercase().as_str())).then_some(value)
}

/// Where an address belongs: `None` for addresses that identify no machine
/// on a network (loopback, link-local, unspecified, multicast, broadcast).
pub fn classify_ip(ip: IpAddr) -> Option<AddressScope> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

/// The private and the public addresses among `addresses`, each sorted and
/// without repeats, as strings; the others are left out (see [`classify_ip`]).
pub fn split_addresses(addresses: &[InterfaceAddress]) -> (Vec<String>, Vec<String>) {
    let mut private = Vec::new();
    let mut public = Vec::new();
    for a in addresses {
        match classify_ip(a.ip) {
            Some(AddressScope::Private) => private.push(a.ip),
            Some(AddressScope::Public) => public.push(a.ip),
            None => {}
        }
    }
    let finish = |mut ips: Vec<IpAddr>| {
        ips.sort();
        ips.dedup();
        ips.into_iter().map(|ip| ip.to_string()).collect()
    };
    (finish(private), finish(public))
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressScope> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() || ip.is_link_local() || ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
        None
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Some(AddressScope::Private)
    } else {
        Some(AddressScope::Public)
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressScope> {
    let first = ip.segments()[0];
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || first & 0xffc0 == 0xfe80 {
        None
    } else if first & 0xfe00 == 0xfc00 {
        Some(AddressScope::Private)
    } else {
        Some(AddressScope::Public)
    }
}

/// The rest of the first line starting with `prefix`.
fn field<'t>(text: &'t str, prefix: &str) -> Option<&'t str> {
    text.lines().find_map(|line| line.strip_prefix(prefix))
}

fn non_empty(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// A shell word's value: single quotes are literal, double quotes and bare
/// text take backslash escapes. An unclosed quote runs to the end.
fn shell_unquote(word: &str) -> String {
    let mut out = String::new();
    let mut chars = word.trim().chars();
    let mut quote = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => match chars.next() {
                Some(e @ ('\\' | '"' | '$' | '`')) => out.push(e),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            (None, '\\') => out.extend(chars.next()),
            (_, c) => out.push(c),
        }
    }
    out
}

/// Reads files under the root, noting the failures that matter.
struct Reader<'r> {
    root: &'r Path,
    problems: Vec<String>,
}

impl Reader<'_> {
    /// A file every Linux machine has: its absence is a problem.
    fn required(&mut self, rel: &str) -> Option<String> {
        self.read(rel).map_err(|e| self.problems.push(format!("reading /{rel}: {e}"))).ok()
    }

    /// A required file and a fact parsed from it; `missing` says what the
    /// file lacked when the parse fails.
    fn required_parsed<T>(&mut self, rel: &str, parse: fn(&str) -> Option<T>, missing: &str) -> Option<T> {
        let text = self.required(rel)?;
        let value = parse(&text);
        if value.is_none() {
            self.problems.push(format!("/{rel} has {missing}"));
        }
        value
    }

    /// A file that may be absent or unreadable (DMI serials are often
    /// root-only, containers have no DMI at all).
    fn optional(&self, rel: &str) -> Option<String> {
        self.read(rel).ok()
    }

    /// Kernel files are text; a stray byte must not lose the whole fact.
    fn read(&self, rel: &str) -> io::Result<String> {
        fs::read(self.root.join(rel)).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    }

    fn dmi(&self, name: &str) -> Option<String> {
        self.optional(&format!("sys/class/dmi/id/{name}")).as_deref().and_then(parse_dmi)
    }

    /// Names of the entries of a directory, sorted; none when it is absent.
    fn entries(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.root.join(rel))
            .map(|dir| dir.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    fn macs(&self) -> Vec<String> {
        let mut macs: Vec<String> = self
            .entries("sys/class/net")
            .into_iter()
            .filter(|name| name != "lo")
            .filter_map(|name| self.optional(&format!("sys/class/net/{name}/address")).as_deref().and_then(parse_mac))
            .collect();
        // Bonds and their slaves share one MAC.
        macs.sort();
        macs.dedup();
        macs
    }

    fn disks(&self) -> Vec<Disk> {
        self.entries("sys/block")
            .into_iter()
            .filter(|name| !is_virtual_block_device(name))
            .filter_map(|name| {
                let size_bytes =
                    self.optional(&format!("sys/block/{name}/size")).as_deref().and_then(parse_block_size)?;
                (size_bytes > 0).then_some(Disk { name, size_bytes })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
