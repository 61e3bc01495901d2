//! NAL units written field by field, for tests that need exact parameter sets and
//! slice headers (ids, sizes) rather than whatever an encoder chose.

/// Bits of an RBSP, written in order.
#[derive(Clone, Debug, Default)]
pub struct Bits {
    bits: Vec<bool>,
}

impl Bits {
    /// No bits yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// `n` bits of `value`, most significant first (u(n)).
    pub fn u(mut self, n: u32, value: u32) -> Self {
        for i in (0..n).rev() {
            self.bits.push(value >> i & 1 == 1);
        }
        self
    }

    /// One flag (u(1)).
    pub fn flag(self, on: bool) -> Self {
        self.u(1, u32::from(on))
    }

    /// Unsigned Exp-Golomb (ue(v)).
    pub fn ue(self, value: u32) -> Self {
        let x = u64::from(value) + 1;
        let len = 64 - x.leading_zeros();
        let mut me = self.u(len - 1, 0);
        for i in (0..len).rev() {
            me.bits.push(x >> i & 1 == 1);
        }
        me
    }

    /// Signed Exp-Golomb (se(v)).
    pub fn se(self, value: i32) -> Self {
        let mapped = if value > 0 {
            2 * value.unsigned_abs() - 1
        } else {
            2 * value.unsigned_abs()
        };
        self.ue(mapped)
    }

    /// The NAL unit: `header`, these bits, the RBSP stop bit and alignment, then
    /// emulation prevention (00 00 0x with x ≤ 3 gets a 03 between).
    pub fn nal(mut self, header: u8) -> Vec<u8> {
        self.bits.push(true);
        while !self.bits.len().is_multiple_of(8) {
            self.bits.push(false);
        }
        let rbsp: Vec<u8> = self
            .bits
            .chunks(8)
            .map(|byte| byte.iter().fold(0u8, |acc, &b| acc << 1 | u8::from(b)))
            .collect();
        let mut out = vec![header];
        let mut zeros = 0;
        for b in rbsp {
            if zeros >= 2 && b <= 3 {
                out.push(3);
                zeros = 0;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            out.push(b);
        }
        out
    }
}

/// A Constrained Baseline SPS with id `id` for a picture of `width_mbs` x
/// `height_mbs` macroblocks (16 pixels each): level 3.1, frame_num and POC type 2,
/// one reference frame, no cropping, no VUI.
pub fn sps(id: u32, width_mbs: u32, height_mbs: u32) -> Vec<u8> {
    Bits::new()
        .u(8, 66)
        .u(8, 0xc0)
        .u(8, 31)
        .ue(id)
        .ue(0) // log2_max_frame_num_minus4
        .ue(2) // pic_order_cnt_type
        .ue(1) // max_num_ref_frames
        .flag(false) // gaps_in_frame_num_value_allowed_flag
        .ue(width_mbs - 1)
        .ue(height_mbs - 1)
        .flag(true) // frame_mbs_only_flag
        .flag(true) // direct_8x8_inference_flag
        .flag(false) // frame_cropping_flag
        .flag(false) // vui_parameters_present_flag
        .nal(0x67)
}

/// A CAVLC PPS with id `id` whose pictures use SPS `sps_id`.
pub fn pps(id: u32, sps_id: u32) -> Vec<u8> {
    Bits::new()
        .ue(id)
        .ue(sps_id)
        .flag(false) // entropy_coding_mode_flag
        .flag(false) // bottom_field_pic_order_in_frame_present_flag
        .ue(0) // num_slice_groups_minus1
        .ue(0) // num_ref_idx_l0_default_active_minus1
        .ue(0) // num_ref_idx_l1_default_active_minus1
        .flag(false) // weighted_pred_flag
        .u(2, 0) // weighted_bipred_idc
        .se(0) // pic_init_qp_minus26
        .se(0) // pic_init_qs_minus26
        .se(0) // chroma_qp_index_offset
        .flag(true) // deblocking_filter_control_present_flag
        .flag(false) // constrained_intra_pred_flag
        .flag(false) // redundant_pic_cnt_present_flag
        .nal(0x68)
}

/// The start of a slice (not decodable): NAL header `header` (0x65 an IDR, 0x41 a
/// reference P slice, …), first_mb_in_slice, slice_type and the PPS it names, then
/// two filler bytes for a body.
pub fn slice(header: u8, first_mb: u32, slice_type: u32, pps_id: u32) -> Vec<u8> {
    let mut nal = Bits::new()
        .ue(first_mb)
        .ue(slice_type)
        .ue(pps_id)
        .nal(header);
    nal.extend([0xaa, 0xbb]);
    nal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb_codes_as_the_standard_tables_them() {
        let bits = |b: Bits| {
            b.bits
                .iter()
                .map(|&x| if x { '1' } else { '0' })
                .collect::<String>()
        };
        assert_eq!(bits(Bits::new().ue(0)), "1");
        assert_eq!(bits(Bits::new().ue(1)), "010");
        assert_eq!(bits(Bits::new().ue(2)), "011");
        assert_eq!(bits(Bits::new().ue(7)), "0001000");
        assert_eq!(bits(Bits::new().se(1)), "010");
        assert_eq!(bits(Bits::new().se(-1)), "011");
        // 00 00 01 inside gets an emulation prevention byte.
        assert_eq!(Bits::new().u(24, 1).nal(0x06), [0x06, 0, 0, 3, 1, 0x80]);
    }
}
