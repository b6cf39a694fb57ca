//! Synthetic citizens and their health records, deterministic from a seed. Nobody here is real:
//! names are drawn from lists of common Estonian names, personal codes are made up (with the
//! right century and sex digit, birth date and check digit), and each person's records follow
//! one or two clinical pictures (an ICD-10 diagnosis, a fitting medicine by ATC code, and an
//! observation by LOINC code with a plausible value).
//!
//! ```text
//!  seed ─▶ SplitMix64 ─▶ Citizen { personal code, name, birth date, conditions }
//!                             └─▶ fhir.rs turns them into Patient, Observation, MedicationRequest
//! ```

use backbone_gateway::r1::DataSubject;

/// A small deterministic generator (SplitMix64, Steele, Lea and Flood 2014). The workspace has no
/// random number crate, and the demo needs the same people from the same seed on every machine,
/// not unpredictability.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

/// One clinical picture: a diagnosis, the medicine that treats it, the observation that follows
/// it.
#[derive(Debug)]
pub struct Condition {
    /// ICD-10 code.
    pub icd10: &'static str,
    /// Its English name.
    pub diagnosis: &'static str,
    /// ATC code of the medicine.
    pub atc: &'static str,
    /// The medicine and its strength.
    pub medicine: &'static str,
    /// Dosage instruction.
    pub dosage: &'static str,
    /// LOINC code of the observation.
    pub loinc: &'static str,
    /// Its name.
    pub observation: &'static str,
    /// UCUM unit.
    pub unit: &'static str,
    /// Plausible range of values for a patient with the condition, tenths.
    pub range_tenths: (u32, u32),
}

/// The clinical pictures the demo draws from.
pub const CONDITIONS: [Condition; 10] = [
    Condition {
        icd10: "I10",
        diagnosis: "Essential (primary) hypertension",
        atc: "C09AA05",
        medicine: "Ramipril 5 mg tablet",
        dosage: "1 tablet once daily",
        loinc: "8480-6",
        observation: "Systolic blood pressure",
        unit: "mm[Hg]",
        range_tenths: (1350, 1750),
    },
    Condition {
        icd10: "E11.9",
        diagnosis: "Type 2 diabetes mellitus without complications",
        atc: "A10BA02",
        medicine: "Metformin 500 mg tablet",
        dosage: "1 tablet twice daily with meals",
        loinc: "4548-4",
        observation: "Hemoglobin A1c/Hemoglobin.total in Blood",
        unit: "%",
        range_tenths: (62, 95),
    },
    Condition {
        icd10: "J45.9",
        diagnosis: "Asthma, unspecified",
        atc: "R03AC02",
        medicine: "Salbutamol 100 micrograms/dose inhaler",
        dosage: "1-2 puffs when needed",
        loinc: "20150-9",
        observation: "FEV1",
        unit: "L",
        range_tenths: (15, 38),
    },
    Condition {
        icd10: "E78.0",
        diagnosis: "Pure hypercholesterolaemia",
        atc: "C10AA05",
        medicine: "Atorvastatin 20 mg tablet",
        dosage: "1 tablet once daily in the evening",
        loinc: "14647-2",
        observation: "Cholesterol [Moles/volume] in Serum or Plasma",
        unit: "mmol/L",
        range_tenths: (55, 85),
    },
    Condition {
        icd10: "J02.9",
        diagnosis: "Acute pharyngitis, unspecified",
        atc: "J01CE02",
        medicine: "Phenoxymethylpenicillin 1 MIU tablet",
        dosage: "1 tablet three times daily for 10 days",
        loinc: "8310-5",
        observation: "Body temperature",
        unit: "Cel",
        range_tenths: (375, 392),
    },
    Condition {
        icd10: "M54.5",
        diagnosis: "Low back pain",
        atc: "M01AE01",
        medicine: "Ibuprofen 400 mg tablet",
        dosage: "1 tablet up to three times daily with food",
        loinc: "72514-3",
        observation: "Pain severity - 0-10 verbal numeric rating [Score] - Reported",
        unit: "{score}",
        range_tenths: (40, 80),
    },
    Condition {
        icd10: "F32.1",
        diagnosis: "Moderate depressive episode",
        atc: "N06AB10",
        medicine: "Escitalopram 10 mg tablet",
        dosage: "1 tablet once daily",
        loinc: "44261-6",
        observation: "Patient Health Questionnaire 9 item (PHQ-9) total score",
        unit: "{score}",
        range_tenths: (100, 190),
    },
    Condition {
        icd10: "E03.9",
        diagnosis: "Hypothyroidism, unspecified",
        atc: "H03AA01",
        medicine: "Levothyroxine 50 micrograms tablet",
        dosage: "1 tablet once daily before breakfast",
        loinc: "3016-3",
        observation: "Thyrotropin [Units/volume] in Serum or Plasma",
        unit: "m[IU]/L",
        range_tenths: (52, 120),
    },
    Condition {
        icd10: "N39.0",
        diagnosis: "Urinary tract infection, site not specified",
        atc: "J01XE01",
        medicine: "Nitrofurantoin 100 mg capsule",
        dosage: "1 capsule twice daily for 5 days",
        loinc: "5821-4",
        observation: "Leukocytes [#/area] in Urine sediment by Microscopy high power field",
        unit: "/[HPF]",
        range_tenths: (100, 500),
    },
    Condition {
        icd10: "I48.9",
        diagnosis: "Atrial fibrillation and atrial flutter, unspecified",
        atc: "B01AF01",
        medicine: "Rivaroxaban 20 mg tablet",
        dosage: "1 tablet once daily with the evening meal",
        loinc: "8867-4",
        observation: "Heart rate",
        unit: "/min",
        range_tenths: (880, 1350),
    },
];

const MALE_NAMES: [&str; 20] = [
    "Jaan", "Peeter", "Andres", "Toomas", "Mart", "Tõnu", "Rein", "Aivar", "Urmas", "Margus",
    "Indrek", "Tarmo", "Kristjan", "Rasmus", "Markus", "Martin", "Siim", "Karl", "Oskar", "Sander",
];
const FEMALE_NAMES: [&str; 20] = [
    "Mari", "Anne", "Tiina", "Kadri", "Kersti", "Ene", "Maire", "Liis", "Triin", "Kati", "Pille",
    "Eha", "Sirje", "Helen", "Laura", "Anna", "Maria", "Sofia", "Emma", "Mia",
];
const SURNAMES: [&str; 30] = [
    "Tamm", "Saar", "Sepp", "Mägi", "Kask", "Kukk", "Rebane", "Ilves", "Pärn", "Koppel", "Oja",
    "Lepik", "Kuusk", "Karu", "Luik", "Lill", "Vaher", "Kallas", "Raud", "Põder", "Kivi", "Lõhmus",
    "Järv", "Kull", "Mets", "Teder", "Ots", "Uibo", "Laur", "Jõgi",
];

/// A synthetic person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Citizen {
    /// The data subject: `EE` and the personal code.
    pub subject: String,
    /// Given name.
    pub given: &'static str,
    /// Family name.
    pub family: &'static str,
    /// `male` or `female` (FHIR administrative gender).
    pub gender: &'static str,
    /// Birth date, `YYYY-MM-DD`.
    pub birth_date: String,
    /// Indices into [`CONDITIONS`]: the person's diagnoses (none for some).
    pub conditions: Vec<usize>,
    /// One observed value per condition, tenths of [`Condition::unit`].
    pub values_tenths: Vec<u32>,
}

/// Why a generated personal code was refused (a bug in this module).
#[derive(Debug, thiserror::Error)]
#[error("generated personal code {masked} is not valid: {why} (please report this)")]
pub struct InvalidCode {
    /// The code with its serial digits masked.
    pub masked: String,
    /// What the parser said.
    pub why: String,
}

// === impl SplitMix64 ===

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`0` when `n` is 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// One of `items`.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        let index = usize::try_from(self.below(items.len() as u64)).ok()?;
        items.get(index).copied()
    }
}

/// `count` citizens from `seed`, each with a distinct, valid personal code.
///
/// # Errors
///
/// [`InvalidCode`] if a generated code does not parse as a data subject (a bug).
pub fn citizens(seed: u64, count: usize) -> Result<Vec<Citizen>, InvalidCode> {
    let mut rng = SplitMix64::new(seed);
    let mut seen = std::collections::BTreeSet::new();
    let mut people = Vec::with_capacity(count);
    while people.len() < count {
        let citizen = citizen(&mut rng)?;
        if seen.insert(citizen.subject.clone()) {
            people.push(citizen);
        }
    }
    Ok(people)
}

/// One citizen.
fn citizen(rng: &mut SplitMix64) -> Result<Citizen, InvalidCode> {
    let female = rng.below(2) == 1;
    // Adults and children: born 1935–2019.
    let year = 1935 + rng.below(85) as u32;
    let month = 1 + rng.below(12) as u32;
    let day = 1 + rng.below(u64::from(days_in_month(year, month))) as u32;
    let serial = rng.below(1000) as u32;
    let code = personal_code(female, year, month, day, serial);
    let subject = format!("EE{code}");
    subject.parse::<DataSubject>().map_err(|why| InvalidCode {
        masked: format!("EE{}xxxx", code.get(..7).unwrap_or_default()),
        why,
    })?;
    let given = if female {
        rng.pick(&FEMALE_NAMES)
    } else {
        rng.pick(&MALE_NAMES)
    }
    .unwrap_or("Mari");
    let family = rng.pick(&SURNAMES).unwrap_or("Tamm");
    // Most people see their doctor for something: 0 (one in five), 1 or 2 conditions.
    let count = match rng.below(5) {
        0 => 0,
        1 | 2 => 1,
        _ => 2,
    };
    let mut conditions = Vec::new();
    while conditions.len() < count {
        let c = rng.below(CONDITIONS.len() as u64) as usize;
        if !conditions.contains(&c) {
            conditions.push(c);
        }
    }
    let values_tenths = conditions
        .iter()
        .map(|&c| {
            CONDITIONS.get(c).map_or(0, |cond| {
                cond.range_tenths.0
                    + rng.below(u64::from(cond.range_tenths.1 - cond.range_tenths.0 + 1)) as u32
            })
        })
        .collect();
    Ok(Citizen {
        subject,
        given,
        family,
        gender: if female { "female" } else { "male" },
        birth_date: format!("{year:04}-{month:02}-{day:02}"),
        conditions,
        values_tenths,
    })
}

/// An Estonian personal code: G YYMMDD SSS C, G saying century and sex (3/4 for the 1900s, 5/6
/// for the 2000s, odd for men), C the check digit (weights 1..9,1, then 3..9,1,2,3, else 0).
pub fn personal_code(female: bool, year: u32, month: u32, day: u32, serial: u32) -> String {
    let century = if year < 2000 { 3 } else { 5 };
    let first = century + u32::from(female);
    let body = format!(
        "{first}{:02}{month:02}{day:02}{:03}",
        year % 100,
        serial % 1000
    );
    let digits: Vec<u32> = body.chars().filter_map(|c| c.to_digit(10)).collect();
    let weighted =
        |weights: [u32; 10]| digits.iter().zip(weights).map(|(d, w)| d * w).sum::<u32>() % 11;
    let mut check = weighted([1, 2, 3, 4, 5, 6, 7, 8, 9, 1]);
    if check == 10 {
        check = weighted([3, 4, 5, 6, 7, 8, 9, 1, 2, 3]);
        if check == 10 {
            check = 0;
        }
    }
    format!("{body}{check}")
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match (
        i32::try_from(year),
        u8::try_from(month)
            .ok()
            .and_then(|m| time::Month::try_from(m).ok()),
    ) {
        (Ok(year), Some(month)) => u32::from(month.length(year)),
        _ => 28,
    }
}

impl Citizen {
    /// The 11-digit personal code (the subject without `EE`).
    pub fn code(&self) -> &str {
        self.subject.get(2..).unwrap_or_default()
    }

    /// The person's conditions with their observed values.
    pub fn picture(&self) -> impl Iterator<Item = (&'static Condition, u32)> + '_ {
        self.conditions
            .iter()
            .zip(&self.values_tenths)
            .filter_map(|(&c, &v)| CONDITIONS.get(c).map(|cond| (cond, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_valid_people() {
        let a = citizens(7, 1000).unwrap();
        assert_eq!(a, citizens(7, 1000).unwrap());
        assert_ne!(a, citizens(8, 1000).unwrap());
        for person in &a {
            person.subject.parse::<DataSubject>().unwrap();
            let first = person.code().chars().next().unwrap();
            assert_eq!(
                person.gender == "female",
                matches!(first, '4' | '6'),
                "{person:?}"
            );
            assert_eq!(&person.birth_date[2..4], &person.code()[1..3]);
        }
        assert!(a.iter().filter(|p| !p.conditions.is_empty()).count() > 600);
    }

    #[test]
    fn known_personal_codes_get_their_check_digit() {
        // Published examples of the algorithm.
        assert_eq!(personal_code(false, 1980, 1, 8, 571), "38001085718");
        assert_eq!(personal_code(true, 1990, 2, 12, 427), "49002124277");
    }
}
