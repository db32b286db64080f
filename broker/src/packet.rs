//! Just enough of MQTT 3.1.1 framing for the relay in front of rumqttd: split a byte stream
//! into packets, read the few fields the relay acts on (CONNECT will and login, PUBLISH
//! retain, SUBSCRIBE filters, SUBACK codes, PUBACK id), flip the retain bits in place, and
//! encode the packets the relay writes itself (PUBLISH, CONNACK). Everything else is
//! forwarded byte for byte.

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Packet types (high nibble of the first byte) the relay looks at.
pub const CONNECT: u8 = 1;
pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const SUBSCRIBE: u8 = 8;
pub const SUBACK: u8 = 9;
pub const DISCONNECT: u8 = 14;

/// CONNACK return code 1: the broker does not speak the client's protocol level.
pub const CONNACK_UNACCEPTABLE_PROTOCOL: u8 = 1;
/// CONNACK return code 4: bad user name or password.
pub const CONNACK_BAD_LOGIN: u8 = 4;
/// CONNACK return code 5: not authorised.
pub const CONNACK_NOT_AUTHORISED: u8 = 5;

#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("remaining length is not a valid variable byte integer")]
    BadRemainingLength,
    #[error("packet of {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("malformed {packet} packet: {what}")]
    Malformed {
        packet: &'static str,
        what: &'static str,
    },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// One whole packet: the first byte and the body after the remaining length. `raw` keeps the
/// exact bytes read so that forwarding does not re-encode anything.
#[derive(Debug, Clone)]
pub struct Frame {
    pub raw: BytesMut,
    /// Offset of the body (after the fixed header) in `raw`.
    pub body_start: usize,
}

impl Frame {
    pub fn kind(&self) -> u8 {
        self.raw[0] >> 4
    }

    pub fn flags(&self) -> u8 {
        self.raw[0] & 0x0f
    }

    pub fn body(&self) -> &[u8] {
        &self.raw[self.body_start..]
    }
}

/// Reads one packet; `Ok(None)` on a clean end of stream between packets.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: usize,
) -> Result<Option<Frame>, PacketError> {
    let mut first = [0u8; 1];
    if reader.read(&mut first).await? == 0 {
        return Ok(None);
    }
    let mut header = BytesMut::with_capacity(5);
    header.put_u8(first[0]);
    let mut remaining: usize = 0;
    let mut shift = 0;
    loop {
        let byte = reader.read_u8().await?;
        header.put_u8(byte);
        remaining |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return Err(PacketError::BadRemainingLength);
        }
    }
    if remaining > limit {
        return Err(PacketError::TooLarge {
            size: remaining,
            limit,
        });
    }
    let body_start = header.len();
    let mut raw = header;
    raw.resize(body_start + remaining, 0);
    reader.read_exact(&mut raw[body_start..]).await?;
    Ok(Some(Frame { raw, body_start }))
}

/// A cursor over a packet body that reads MQTT's length-prefixed fields.
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
    packet: &'static str,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8], packet: &'static str) -> Self {
        Fields {
            bytes,
            at: 0,
            packet,
        }
    }

    fn malformed(&self, what: &'static str) -> PacketError {
        PacketError::Malformed {
            packet: self.packet,
            what,
        }
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, PacketError> {
        let byte = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| self.malformed(what))?;
        self.at += 1;
        Ok(byte)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, PacketError> {
        let high = self.u8(what)?;
        let low = self.u8(what)?;
        Ok(u16::from_be_bytes([high, low]))
    }

    fn binary(&mut self, what: &'static str) -> Result<&'a [u8], PacketError> {
        let len = usize::from(self.u16(what)?);
        let end = self.at + len;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or_else(|| self.malformed(what))?;
        self.at = end;
        Ok(slice)
    }

    fn string(&mut self, what: &'static str) -> Result<String, PacketError> {
        let bytes = self.binary(what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.malformed(what))
    }

    fn rest(&self) -> &'a [u8] {
        &self.bytes[self.at..]
    }

    fn is_empty(&self) -> bool {
        self.at >= self.bytes.len()
    }
}

/// The will a client registered in its CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
}

/// What the relay needs from a CONNECT.
#[derive(Debug, Clone)]
pub struct Connect {
    pub protocol_level: u8,
    pub client_id: String,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    pub keep_alive: u16,
    /// Offset of the connect-flags byte in `Frame::raw` (the keep alive follows it).
    flags_at: usize,
}

const WILL_RETAIN_BIT: u8 = 0x20;

pub fn parse_connect(frame: &Frame) -> Result<Connect, PacketError> {
    let mut fields = Fields::new(frame.body(), "CONNECT");
    let _protocol_name = fields.binary("protocol name")?;
    let protocol_level = fields.u8("protocol level")?;
    let flags_at = frame.body_start + fields.at;
    let flags = fields.u8("connect flags")?;
    let keep_alive = fields.u16("keep alive")?;
    if protocol_level >= 5 {
        // Properties follow; the relay refuses MQTT 5 before reading further.
        return Ok(Connect {
            protocol_level,
            client_id: String::new(),
            will: None,
            username: None,
            password: None,
            keep_alive,
            flags_at,
        });
    }
    let client_id = fields.string("client identifier")?;
    let will = if flags & 0x04 != 0 {
        let topic = fields.string("will topic")?;
        let payload = Bytes::copy_from_slice(fields.binary("will message")?);
        Some(Will {
            topic,
            payload,
            qos: (flags >> 3) & 0x03,
            retain: flags & WILL_RETAIN_BIT != 0,
        })
    } else {
        None
    };
    let username = if flags & 0x80 != 0 {
        Some(fields.string("user name")?)
    } else {
        None
    };
    let password = if flags & 0x40 != 0 {
        Some(Bytes::copy_from_slice(fields.binary("password")?))
    } else {
        None
    };
    Ok(Connect {
        protocol_level,
        client_id,
        will,
        username,
        password,
        keep_alive,
        flags_at,
    })
}

/// Clears the will-retain flag so that rumqttd never stores the will as retained (the relay
/// keeps retained messages itself).
pub fn clear_will_retain(frame: &mut Frame, connect: &Connect) {
    frame.raw[connect.flags_at] &= !WILL_RETAIN_BIT;
}

/// Rewrites the keep alive of a CONNECT in place.
pub fn set_keep_alive(frame: &mut Frame, connect: &Connect, seconds: u16) {
    let at = connect.flags_at + 1;
    frame.raw[at..at + 2].copy_from_slice(&seconds.to_be_bytes());
}

/// What the relay needs from a PUBLISH.
#[derive(Debug, Clone)]
pub struct Publish {
    pub topic: String,
    pub qos: u8,
    pub retain: bool,
    pub payload: Bytes,
}

pub fn parse_publish(frame: &Frame) -> Result<Publish, PacketError> {
    let flags = frame.flags();
    let qos = (flags >> 1) & 0x03;
    if qos == 3 {
        return Err(PacketError::Malformed {
            packet: "PUBLISH",
            what: "QoS 3",
        });
    }
    let mut fields = Fields::new(frame.body(), "PUBLISH");
    let topic = fields.string("topic name")?;
    if qos > 0 {
        fields.u16("packet identifier")?;
    }
    Ok(Publish {
        topic,
        qos,
        retain: flags & 0x01 != 0,
        payload: Bytes::copy_from_slice(fields.rest()),
    })
}

/// Clears the retain flag of a PUBLISH in place.
pub fn clear_publish_retain(frame: &mut Frame) {
    frame.raw[0] &= !0x01;
}

/// Packet identifier of a PUBACK (also the first field of PUBREC, PUBREL, PUBCOMP, SUBACK).
pub fn parse_packet_id(frame: &Frame, packet: &'static str) -> Result<u16, PacketError> {
    Fields::new(frame.body(), packet).u16("packet identifier")
}

/// A SUBSCRIBE: its packet identifier and each (filter, requested QoS).
#[derive(Debug, Clone)]
pub struct Subscribe {
    pub pkid: u16,
    pub filters: Vec<(String, u8)>,
}

pub fn parse_subscribe(frame: &Frame) -> Result<Subscribe, PacketError> {
    let mut fields = Fields::new(frame.body(), "SUBSCRIBE");
    let pkid = fields.u16("packet identifier")?;
    let mut filters = Vec::new();
    while !fields.is_empty() {
        let filter = fields.string("topic filter")?;
        let qos = fields.u8("requested QoS")? & 0x03;
        filters.push((filter, qos));
    }
    Ok(Subscribe { pkid, filters })
}

/// A SUBACK: its packet identifier and one return code per filter (0..=2 granted QoS,
/// 0x80 failure).
pub fn parse_suback(frame: &Frame) -> Result<(u16, Vec<u8>), PacketError> {
    let mut fields = Fields::new(frame.body(), "SUBACK");
    let pkid = fields.u16("packet identifier")?;
    Ok((pkid, fields.rest().to_vec()))
}

/// Return code of a CONNACK.
pub fn parse_connack(frame: &Frame) -> Result<u8, PacketError> {
    let mut fields = Fields::new(frame.body(), "CONNACK");
    let _session_present = fields.u8("acknowledge flags")?;
    fields.u8("return code")
}

fn put_remaining_length(buf: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if len == 0 {
            break;
        }
    }
}

/// Appends an encoded PUBLISH to `buf`.
pub fn encode_publish(
    buf: &mut BytesMut,
    topic: &str,
    payload: &[u8],
    qos: u8,
    retain: bool,
    pkid: u16,
) {
    let len = 2 + topic.len() + if qos > 0 { 2 } else { 0 } + payload.len();
    buf.put_u8((PUBLISH << 4) | (qos << 1) | u8::from(retain));
    put_remaining_length(buf, len);
    // Topics come from packets that carried them with a u16 length.
    buf.put_u16(topic.len() as u16);
    buf.put_slice(topic.as_bytes());
    if qos > 0 {
        buf.put_u16(pkid);
    }
    buf.put_slice(payload);
}

pub fn encode_connack(return_code: u8) -> [u8; 4] {
    [CONNACK << 4, 2, 0, return_code]
}

/// An MQTT 3.1.1 CONNECT with a clean session and no will, login or keep alive; used to probe
/// that rumqttd answers.
pub fn encode_probe_connect(client_id: &str) -> BytesMut {
    let mut buf = BytesMut::new();
    let len = 10 + 2 + client_id.len();
    buf.put_u8(CONNECT << 4);
    put_remaining_length(&mut buf, len);
    buf.put_u16(4);
    buf.put_slice(b"MQTT");
    buf.put_u8(4);
    buf.put_u8(0x02);
    buf.put_u16(30);
    buf.put_u16(client_id.len() as u16);
    buf.put_slice(client_id.as_bytes());
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frame_of(bytes: &[u8]) -> Frame {
        let mut reader = bytes;
        read_frame(&mut reader, 1 << 20).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn publish_round_trips_and_retain_clears_in_place() {
        let mut buf = BytesMut::new();
        encode_publish(&mut buf, "pvbus/a/state", b"{\"v\":1}", 1, true, 77);
        let mut frame = frame_of(&buf).await;
        let publish = parse_publish(&frame).unwrap();
        assert_eq!(publish.topic, "pvbus/a/state");
        assert_eq!((publish.qos, publish.retain), (1, true));
        assert_eq!(&publish.payload[..], b"{\"v\":1}");
        clear_publish_retain(&mut frame);
        assert!(!parse_publish(&frame).unwrap().retain);
    }

    #[tokio::test]
    async fn long_remaining_length_is_read() {
        let payload = vec![7u8; 20_000];
        let mut buf = BytesMut::new();
        encode_publish(&mut buf, "t", &payload, 0, false, 0);
        let frame = frame_of(&buf).await;
        assert_eq!(parse_publish(&frame).unwrap().payload.len(), 20_000);
    }

    #[tokio::test]
    async fn oversized_packet_is_refused() {
        let mut buf = BytesMut::new();
        encode_publish(&mut buf, "t", &[0u8; 2000], 0, false, 0);
        let mut reader = &buf[..];
        let err = read_frame(&mut reader, 1000).await.unwrap_err();
        assert!(
            matches!(err, PacketError::TooLarge { limit: 1000, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn connect_will_and_login_are_read_and_will_retain_cleared() {
        // CONNECT, MQTT 3.1.1, flags: user, password, will retain, will QoS 1, will, clean.
        let mut body = BytesMut::new();
        body.put_u16(4);
        body.put_slice(b"MQTT");
        body.put_u8(4);
        body.put_u8(0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02);
        body.put_u16(60);
        for field in [&b"c1"[..], b"pvbus/c1/status", b"offline", b"ha", b"secret"] {
            body.put_u16(field.len() as u16);
            body.put_slice(field);
        }
        let mut buf = BytesMut::new();
        buf.put_u8(CONNECT << 4);
        put_remaining_length(&mut buf, body.len());
        buf.put_slice(&body);
        let mut frame = frame_of(&buf).await;
        let connect = parse_connect(&frame).unwrap();
        assert_eq!(connect.client_id, "c1");
        let will = connect.will.clone().unwrap();
        assert_eq!(
            (
                will.topic.as_str(),
                &will.payload[..],
                will.qos,
                will.retain
            ),
            ("pvbus/c1/status", &b"offline"[..], 1, true)
        );
        assert_eq!(connect.username.as_deref(), Some("ha"));
        assert_eq!(connect.password.as_deref(), Some(&b"secret"[..]));
        clear_will_retain(&mut frame, &connect);
        assert!(!parse_connect(&frame).unwrap().will.unwrap().retain);
        assert_eq!(connect.keep_alive, 60);
        set_keep_alive(&mut frame, &connect, 0xfffe);
        let again = parse_connect(&frame).unwrap();
        assert_eq!((again.keep_alive, again.client_id.as_str()), (0xfffe, "c1"));
    }

    #[tokio::test]
    async fn truncated_subscribe_names_the_field() {
        // SUBSCRIBE with pkid 5 and a filter whose length claims more bytes than present.
        let bytes = [SUBSCRIBE << 4 | 0x02, 5, 0, 5, 0, 9, b'a'];
        let frame = frame_of(&bytes).await;
        let err = parse_subscribe(&frame).unwrap_err();
        assert_eq!(err.to_string(), "malformed SUBSCRIBE packet: topic filter");
    }
}
