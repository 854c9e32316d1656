//! `simplemsgr dump FILE`: show a capture file. Frame decoding arrives with the protocol
//! decoders; until then this prints an offset/hex/ASCII dump.

use std::path::PathBuf;

use clap::Args;

use super::CliError;

/// Arguments of `simplemsgr dump`.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The file to show.
    pub file: PathBuf,
    /// Show at most this many bytes.
    #[arg(long, default_value_t = 4096)]
    pub max_bytes: usize,
}

/// Run the command.
pub fn run(args: DumpArgs) -> Result<(), CliError> {
    let data = std::fs::read(&args.file)
        .map_err(|e| CliError::failed(format!("cannot read {}: {e}", args.file.display())))?;
    println!(
        "{}: {} bytes (frame decoding is not built yet; raw bytes follow)",
        args.file.display(),
        data.len()
    );
    print!("{}", hexdump(&data[..data.len().min(args.max_bytes)]));
    if data.len() > args.max_bytes {
        println!(
            "… {} more bytes (raise --max-bytes to see them)",
            data.len() - args.max_bytes
        );
    }
    Ok(())
}

/// `offset  hex bytes  |ascii|`, 16 bytes a line.
fn hexdump(data: &[u8]) -> String {
    let mut out = String::new();
    for (i, chunk) in data.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        out.push_str(&format!(
            "{:08x}  {:<47}  |{ascii}|\n",
            i * 16,
            hex.join(" ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn hexdump_lines() {
        let d = super::hexdump(b"ceph v027\x00\x01\x02abcdefghij");
        let lines: Vec<&str> = d.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("00000000  63 65 70 68 20 76 30 32 37 00 01 02"),
            "{d}"
        );
        assert!(lines[0].ends_with("|ceph v027...abcd|"), "{d}");
        assert!(lines[1].starts_with("00000010  65 66"), "{d}");
    }
}
