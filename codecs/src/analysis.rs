//! Signal measurements for tests and benchmarks: the dominant frequency of a
//! tone and its level. Used to prove that audio really crossed a codec chain
//! or a call (tone in, same tone out), never on the media path itself.

/// Power of `freq` in `samples` (Goertzel), normalised by length.
fn goertzel(samples: &[i16], sample_rate: u32, freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(sample_rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (samples.len().max(1) as f64).powi(2)
}

/// The strongest frequency between 50 Hz and the Nyquist limit, to about
/// 0.1 Hz: a 10 Hz scan, then a fine search around the peak.
pub fn dominant_frequency(samples: &[i16], sample_rate: u32) -> f64 {
    let nyquist = f64::from(sample_rate) / 2.0;
    let peak = |from: f64, to: f64, step: f64| {
        let mut best = (from, f64::MIN);
        let mut f = from;
        while f <= to {
            let p = goertzel(samples, sample_rate, f);
            if p > best.1 {
                best = (f, p);
            }
            f += step;
        }
        best.0
    };
    let coarse = peak(50.0, nyquist - 10.0, 10.0);
    let mid = peak(coarse - 10.0, coarse + 10.0, 1.0);
    peak(mid - 1.0, mid + 1.0, 0.1)
}

/// RMS level in dB relative to a full-scale sine (0 dBov = a sine peaking at
/// 32767; a square wave at full scale would read +3 dB).
pub fn level_db(samples: &[i16]) -> f64 {
    let n = samples.len().max(1) as f64;
    let ms = samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / n;
    let full_sine_rms = 32767.0 / std::f64::consts::SQRT_2;
    10.0 * (ms.max(1e-9)).log10() - 20.0 * full_sine_rms.log10()
}

/// A sine tone: `freq` Hz at `level_db` (see [`level_db`]), mono.
pub fn tone(freq: f64, level_db: f64, sample_rate: u32, samples: usize) -> Vec<i16> {
    let amp = 32767.0 * 10f64.powf(level_db / 20.0);
    (0..samples)
        .map(|i| {
            let t = i as f64 / f64::from(sample_rate);
            (amp * (2.0 * std::f64::consts::PI * freq * t).sin()).round() as i16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_tone_and_its_level() {
        let t = tone(1000.0, -10.0, 8000, 8000);
        assert!((dominant_frequency(&t, 8000) - 1000.0).abs() < 0.5);
        assert!((level_db(&t) + 10.0).abs() < 0.05);
        let t = tone(440.0, -20.0, 48000, 24000);
        assert!((dominant_frequency(&t, 48000) - 440.0).abs() < 0.5);
        assert!((level_db(&t) + 20.0).abs() < 0.05);
        assert!(level_db(&[0; 100]) < -90.0);
    }
}
