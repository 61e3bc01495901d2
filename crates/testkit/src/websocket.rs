//! WebSocket frames as tests need them (RFC 6455 §5): masked client frames to
//! send, and nalcast's unmasked server frames to read, without a WebSocket library
//! in between, so tests see exactly the bytes on the wire.

/// A masked client frame (what browsers send): `first_byte` is FIN, RSV and the
/// opcode (0x81 a whole text message, 0x89 a ping, …).
pub fn client_frame(first_byte: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![first_byte];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// The head of a server frame at the start of `buf`: (opcode, payload length,
/// head length), or `None` until the head is whole.
fn server_frame_head(buf: &[u8]) -> Option<(u8, u64, usize)> {
    let (&first, rest) = buf.split_first()?;
    let (&second, rest) = rest.split_first()?;
    let (len, used) = match second & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?)),
            4,
        ),
        127 => (u64::from_be_bytes(rest.get(..8)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    Some((first & 0x0f, len, used))
}

/// One server frame at the start of `buf`: (opcode, payload, bytes used), or
/// `None` until the whole frame is there.
pub fn parse_server_frame(buf: &[u8]) -> Option<(u8, &[u8], usize)> {
    let (opcode, len, used) = server_frame_head(buf)?;
    let end = used.checked_add(usize::try_from(len).ok()?)?;
    Some((opcode, buf.get(used..end)?, end))
}

/// Reads one server frame from `r`: (opcode, payload).
#[cfg(feature = "server")]
pub async fn read_server_frame<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
) -> std::io::Result<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::with_capacity(10);
    loop {
        if let Some((opcode, len, _)) = server_frame_head(&head) {
            let len = usize::try_from(len).map_err(|_| std::io::ErrorKind::InvalidData)?;
            let mut payload = vec![0u8; len];
            r.read_exact(&mut payload).await?;
            return Ok((opcode, payload));
        }
        head.push(r.read_u8().await?);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_frames_of_each_length_form_parse_back() {
        for len in [0usize, 125, 126, 65535, 65536] {
            let mut frame = vec![0x82];
            match len {
                0..=125 => frame.push(len as u8),
                126..=65535 => {
                    frame.push(126);
                    frame.extend_from_slice(&(len as u16).to_be_bytes());
                }
                _ => {
                    frame.push(127);
                    frame.extend_from_slice(&(len as u64).to_be_bytes());
                }
            }
            frame.extend(std::iter::repeat_n(7u8, len));
            let (op, payload, used) = parse_server_frame(&frame).expect("whole");
            assert_eq!((op, payload.len(), used), (2, len, frame.len()));
            assert!(parse_server_frame(&frame[..frame.len() - 1]).is_none() || len == 0);
        }
        let masked = client_frame(0x81, b"hi", [1, 2, 3, 4]);
        assert_eq!(masked, [0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]);
    }
}
