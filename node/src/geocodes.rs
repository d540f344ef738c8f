//! Shapes of the region codes CAP alerts name (FIPS, SAME, national codes),
//! loaded from an operator's GeoJSON file, so that `alerts --near` can place
//! a point inside or outside an area given by code only.
//!
//! The file is a GeoJSON `FeatureCollection`. Each feature is one code: its
//! `properties` hold the CAP geocode's `valueName` and `value` (strings; a
//! number is read as its decimal text), its geometry is a `Polygon` or
//! `MultiPolygon` in GeoJSON's `[longitude, latitude]` order, holes allowed.
//! Several features with one code add up.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use geojson::{FeatureCollection, GeometryValue, JsonValue, PolygonType};
use lifeline_consensus::alert::{NamedValue, Point, in_ring};
use thiserror::Error;

/// Largest file read.
pub const MAX_FILE: u64 = 64 << 20;
/// Most points kept, over every shape.
pub const MAX_POINTS: usize = 4_000_000;

/// Why the file cannot be used.
#[derive(Debug, Error)]
pub enum GeocodeShapesError {
    /// The file cannot be read.
    #[error("cannot read the geocode shapes file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Over [`MAX_FILE`] or [`MAX_POINTS`].
    #[error(
        "the geocode shapes file {0} is too large (at most 64 MiB and 4 million points); keep only the codes of your region"
    )]
    TooLarge(PathBuf),
    /// Not a GeoJSON feature collection.
    #[error("the geocode shapes file {path} is not a GeoJSON FeatureCollection: {reason}")]
    NotGeoJson {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// One feature is unusable.
    #[error(
        "the geocode shapes file {path}, feature {index}: {reason} (each feature needs \
         properties \"valueName\" and \"value\" and a Polygon or MultiPolygon geometry)"
    )]
    Feature {
        /// The file.
        path: PathBuf,
        /// Which feature, from 0.
        index: usize,
        /// Why.
        reason: String,
    },
}

/// A polygon with holes: the outer ring first.
type Polygon = Vec<Vec<Point>>;

/// Shapes by geocode.
#[derive(Debug, Default)]
pub struct GeocodeShapes {
    shapes: HashMap<(String, String), Vec<Polygon>>,
}

impl GeocodeShapes {
    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Self, GeocodeShapesError> {
        let read = |source| GeocodeShapesError::Read {
            path: path.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read)?.len();
        if len > MAX_FILE {
            return Err(GeocodeShapesError::TooLarge(path.to_path_buf()));
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Self::parse(&text, path)
    }

    /// Reads GeoJSON text (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, GeocodeShapesError> {
        let collection: FeatureCollection =
            text.parse()
                .map_err(|e: geojson::Error| GeocodeShapesError::NotGeoJson {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
        let mut out = Self::default();
        let mut points = 0usize;
        for (index, feature) in collection.features.into_iter().enumerate() {
            let bad = |reason: &str| GeocodeShapesError::Feature {
                path: path.to_path_buf(),
                index,
                reason: reason.to_owned(),
            };
            let property = |name: &str| -> Option<String> {
                match feature.property(name)? {
                    JsonValue::String(s) => Some(s.trim().to_owned()),
                    JsonValue::Number(n) => Some(n.to_string()),
                    _ => None,
                }
            };
            let (Some(name), Some(value)) = (property("valueName"), property("value")) else {
                return Err(bad(
                    "no \"valueName\" and \"value\" strings in its properties",
                ));
            };
            let polygons: Vec<PolygonType> = match feature.geometry.map(|g| g.value) {
                Some(GeometryValue::Polygon { coordinates }) => vec![coordinates],
                Some(GeometryValue::MultiPolygon { coordinates }) => coordinates,
                _ => return Err(bad("its geometry is not a Polygon or MultiPolygon")),
            };
            let entry = out.shapes.entry((name, value)).or_default();
            for polygon in polygons {
                let mut rings = Vec::with_capacity(polygon.len());
                for ring in polygon {
                    points = points.saturating_add(ring.len());
                    if points > MAX_POINTS {
                        return Err(GeocodeShapesError::TooLarge(path.to_path_buf()));
                    }
                    let ring = ring
                        .iter()
                        .map(|pos| match pos.as_slice() {
                            [lon, lat, ..]
                                if (-180.0..=180.0).contains(lon)
                                    && (-90.0..=90.0).contains(lat) =>
                            {
                                Ok(Point {
                                    lat: *lat,
                                    lon: *lon,
                                })
                            }
                            _ => Err(bad("a position is not [longitude, latitude] in range")),
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    if ring.len() < 4 {
                        return Err(bad("a ring has fewer than 4 positions"));
                    }
                    rings.push(ring);
                }
                if !rings.is_empty() {
                    entry.push(rings);
                }
            }
        }
        Ok(out)
    }

    /// How many codes have a shape.
    pub fn len(&self) -> usize {
        self.shapes.len()
    }

    /// Whether no code has a shape.
    pub fn is_empty(&self) -> bool {
        self.shapes.is_empty()
    }

    /// The outer rings of `code`'s shape, for a map (its holes are left
    /// out); `None` if the code has no shape here.
    pub fn outlines(&self, code: &NamedValue) -> Option<impl Iterator<Item = &[Point]>> {
        let polygons = self
            .shapes
            .get(&(code.name.trim().to_owned(), code.value.trim().to_owned()))?;
        Some(
            polygons
                .iter()
                .filter_map(|rings| rings.first().map(Vec::as_slice)),
        )
    }

    /// Whether `code`'s shape holds `p`; `None` if the code has no shape here.
    pub fn contains(&self, code: &NamedValue, p: Point) -> Option<bool> {
        let polygons = self
            .shapes
            .get(&(code.name.trim().to_owned(), code.value.trim().to_owned()))?;
        Some(polygons.iter().any(|rings| match rings.split_first() {
            Some((outer, holes)) => in_ring(outer, p) && !holes.iter().any(|h| in_ring(h, p)),
            None => false,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OTTAWA: &str = r#"{"type": "FeatureCollection", "features": [
      {"type": "Feature",
       "properties": {"valueName": "profile:CAP-CP:Location:0.3", "value": "3506008"},
       "geometry": {"type": "Polygon", "coordinates": [
         [[-76.0, 45.2], [-75.4, 45.2], [-75.4, 45.6], [-76.0, 45.6], [-76.0, 45.2]],
         [[-75.75, 45.35], [-75.65, 45.35], [-75.65, 45.45], [-75.75, 45.45], [-75.75, 45.35]]
       ]}},
      {"type": "Feature",
       "properties": {"valueName": "SAME", "value": 6109},
       "geometry": {"type": "MultiPolygon", "coordinates": [
         [[[-120.2, 38.3], [-119.7, 38.3], [-119.7, 38.7], [-120.2, 38.7], [-120.2, 38.3]]]
       ]}}
    ]}"#;

    fn code(name: &str, value: &str) -> NamedValue {
        NamedValue {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn a_map_gets_each_polygon_s_outer_ring() -> Result<(), GeocodeShapesError> {
        let shapes = GeocodeShapes::parse(OTTAWA, Path::new("test.geojson"))?;
        let ottawa = code("profile:CAP-CP:Location:0.3", "3506008");
        let rings: Vec<&[Point]> = shapes.outlines(&ottawa).into_iter().flatten().collect();
        // One polygon: its outer ring, without the hole.
        assert_eq!(rings.len(), 1);
        assert_eq!(rings[0].len(), 5);
        assert!(rings[0].iter().any(|p| p.lon == -76.0));
        assert!(shapes.outlines(&code("SAME", "000000")).is_none());
        Ok(())
    }

    #[test]
    fn a_code_s_shape_places_a_point_with_holes_and_numbers() -> Result<(), GeocodeShapesError> {
        let shapes = GeocodeShapes::parse(OTTAWA, Path::new("test.geojson"))?;
        assert_eq!(shapes.len(), 2);
        let ottawa = code("profile:CAP-CP:Location:0.3", "3506008");
        assert_eq!(
            shapes.contains(
                &ottawa,
                Point {
                    lat: 45.3,
                    lon: -75.9
                }
            ),
            Some(true)
        );
        // Inside the hole, and outside the outer ring.
        assert_eq!(
            shapes.contains(
                &ottawa,
                Point {
                    lat: 45.4,
                    lon: -75.7
                }
            ),
            Some(false)
        );
        assert_eq!(
            shapes.contains(
                &ottawa,
                Point {
                    lat: 46.0,
                    lon: -75.7
                }
            ),
            Some(false)
        );
        // A number value is read as its text.
        let same = code("SAME", "6109");
        assert_eq!(
            shapes.contains(
                &same,
                Point {
                    lat: 38.5,
                    lon: -120.0
                }
            ),
            Some(true)
        );
        assert_eq!(
            shapes.contains(
                &code("SAME", "6003"),
                Point {
                    lat: 38.5,
                    lon: -120.0
                }
            ),
            None
        );
        Ok(())
    }

    #[test]
    fn a_bad_file_says_which_feature_and_what_to_write() {
        let err = |text: &str| {
            GeocodeShapes::parse(text, Path::new("shapes.geojson"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err("[1, 2]").contains("not a GeoJSON FeatureCollection"));
        let no_code = OTTAWA.replace("\"valueName\": \"SAME\", ", "");
        let e = err(&no_code);
        assert!(e.contains("feature 1") && e.contains("valueName"), "{e}");
        let flipped = OTTAWA.replace("[-120.2, 38.3]", "[38.3, -120.2]");
        assert!(err(&flipped).contains("[longitude, latitude]"));
    }
}
