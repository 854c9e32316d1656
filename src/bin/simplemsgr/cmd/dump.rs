//! `simplemsgr dump FILE`: decode ONE direction of a captured msgr2 or v1 byte stream
//! (raw bytes, or a pcap/pcapng with a port/direction filter) and print every frame, one
//! per line or as JSON lines. Signed or encrypted msgr2 is decrypted with a key log
//! (docs/PROTOCOL.md §11). The decoders live in `simplemsgr::dump`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use simplemsgr::capture::{read_packets, reassemble, tcp_segments};
use simplemsgr::crypto::KeyLogFile;
use simplemsgr::dump::{decode_stream, json_str, DumpOptions, ProtoChoice};

use super::CliError;

/// `--proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtoArg {
    /// From the banner.
    Auto,
    /// Legacy v1 (`ceph v027`).
    V1,
    /// msgr2.
    Msgr2,
}

/// `--direction`, relative to `--port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DirectionArg {
    /// Bytes sent TO the port (client to server when the port is the server's).
    To,
    /// Bytes sent FROM the port (server to client).
    From,
    /// Both directions, each decoded on its own.
    Both,
}

/// Arguments of `simplemsgr dump`.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The capture: raw bytes of one direction, or a pcap/pcapng file (detected by its magic).
    pub file: PathBuf,
    /// Treat FILE as pcap/pcapng even if its magic is not recognised.
    #[arg(long)]
    pub pcap: bool,
    /// pcap: select TCP streams with this port at either end (see --direction).
    #[arg(long)]
    pub port: Option<u16>,
    /// pcap: with --port, which direction to decode.
    #[arg(long, value_enum, default_value_t = DirectionArg::Both)]
    pub direction: DirectionArg,
    /// pcap: only segments from this source port.
    #[arg(long)]
    pub src: Option<u16>,
    /// pcap: only segments to this destination port.
    #[arg(long)]
    pub dst: Option<u16>,
    /// Protocol of the stream.
    #[arg(long, value_enum, default_value_t = ProtoArg::Auto)]
    pub proto: ProtoArg,
    /// Key log (docs/PROTOCOL.md §11; written by a messenger run with SIMPLEMSGR_KEYLOG=FILE).
    #[arg(long)]
    pub keylog: Option<PathBuf>,
    /// Print JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
}

fn is_pcap(data: &[u8]) -> bool {
    const MAGICS: [[u8; 4]; 5] = [
        [0xd4, 0xc3, 0xb2, 0xa1],
        [0xa1, 0xb2, 0xc3, 0xd4],
        [0x4d, 0x3c, 0xb2, 0xa1],
        [0xa1, 0xb2, 0x3c, 0x4d],
        [0x0a, 0x0d, 0x0d, 0x0a],
    ];
    data.len() >= 4 && MAGICS.iter().any(|m| data[..4] == m[..])
}

/// Run the command.
pub fn run(args: DumpArgs) -> Result<(), CliError> {
    let data = std::fs::read(&args.file)
        .map_err(|e| CliError::failed(format!("cannot read {}: {e}", args.file.display())))?;
    let keylog = match &args.keylog {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| CliError::failed(format!("cannot read {}: {e}", p.display())))?;
            Some(
                KeyLogFile::parse(&text)
                    .map_err(|e| CliError::failed(format!("{}: {e}", p.display())))?,
            )
        }
        None => None,
    };
    let opts = DumpOptions {
        proto: Some(match args.proto {
            ProtoArg::Auto => ProtoChoice::Auto,
            ProtoArg::V1 => ProtoChoice::V1,
            ProtoArg::Msgr2 => ProtoChoice::Msgr2,
        }),
        keylog,
    };
    if !(args.pcap || is_pcap(&data)) {
        if args.port.is_some() || args.src.is_some() || args.dst.is_some() {
            return Err(CliError::usage(
                "--port/--src/--dst select streams in a pcap; FILE is raw bytes of one direction",
            ));
        }
        return decode_one(&data, &opts, args.json, None);
    }
    let packets = read_packets(&data)
        .map_err(|e| CliError::failed(format!("{}: {e}", args.file.display())))?;
    let segments = tcp_segments(&packets)
        .map_err(|e| CliError::failed(format!("{}: {e}", args.file.display())))?;
    let streams: BTreeSet<(SocketAddr, SocketAddr)> = segments
        .iter()
        .filter(|s| !s.payload.is_empty())
        .filter(|s| args.src.map_or(true, |p| s.src.port() == p))
        .filter(|s| args.dst.map_or(true, |p| s.dst.port() == p))
        .filter(|s| match (args.port, args.direction) {
            (None, _) => true,
            (Some(p), DirectionArg::To) => s.dst.port() == p,
            (Some(p), DirectionArg::From) => s.src.port() == p,
            (Some(p), DirectionArg::Both) => s.src.port() == p || s.dst.port() == p,
        })
        .map(|s| (s.src, s.dst))
        .collect();
    if streams.is_empty() {
        return Err(CliError::failed(
            "no TCP payload matches the port/direction filter",
        ));
    }
    let mut failed = None;
    for (src, dst) in streams {
        let bytes = reassemble(&segments, src.port(), dst.port())
            .map_err(|e| CliError::failed(format!("{src} -> {dst}: {e}")))?;
        if args.json {
            println_quiet(format!(
                "{{\"stream\":{},\"src\":{},\"dst\":{},\"bytes\":{}}}",
                json_str(&format!("{src} -> {dst}")),
                json_str(&src.to_string()),
                json_str(&dst.to_string()),
                bytes.len()
            ));
        } else {
            println_quiet(format!("# stream {src} -> {dst} ({} bytes)", bytes.len()));
        }
        if let Err(e) = decode_one(&bytes, &opts, args.json, Some((src, dst))) {
            failed = Some(e);
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn decode_one(
    bytes: &[u8],
    opts: &DumpOptions,
    json: bool,
    stream: Option<(SocketAddr, SocketAddr)>,
) -> Result<(), CliError> {
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    // A closed pipe (`| head`) ends the output quietly instead of panicking.
    let mut print = |r: &simplemsgr::dump::Record| {
        let line = if json { r.to_json() } else { r.to_line() };
        let _ = writeln!(lock, "{line}");
    };
    match decode_stream(bytes, opts, &mut print) {
        Ok(_) => Ok(()),
        Err(e) => {
            let ctx = stream.map_or(String::new(), |(s, d)| format!("stream {s} -> {d}: "));
            if json {
                println_quiet(format!(
                    "{{\"error\":{},\"offset\":{}}}",
                    json_str(&format!("{ctx}{e}")),
                    e.offset
                ));
            }
            Err(CliError::failed(format!("{ctx}{e}")))
        }
    }
}

/// Print a line, ignoring a closed stdout.
fn println_quiet(line: String) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn pcap_magic() {
        assert!(super::is_pcap(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0]));
        assert!(super::is_pcap(&[0x0a, 0x0d, 0x0d, 0x0a]));
        assert!(!super::is_pcap(b"ceph v027"));
    }
}
