//! A thin layer over plotters' SVG backend: boxes, text, lines and arrows in pixel
//! coordinates. Text is drawn through plotters, which escapes it; callers pass it
//! through [`super::clean`] first.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::Color as _;

/// A colour.
#[derive(Clone, Copy, Debug)]
pub struct Color(pub u8, pub u8, pub u8);

impl Color {
    pub const INK: Color = Color(33, 37, 41);
    pub const WHITE: Color = Color(255, 255, 255);
    pub const GRID: Color = Color(206, 212, 218);
    pub const HEADER: Color = Color(233, 236, 239);
    pub const CLIENT: Color = Color(231, 245, 255);
    pub const VIP: Color = Color(255, 243, 191);
    pub const NAT: Color = Color(255, 236, 236);
    pub const GATEWAY: Color = Color(211, 249, 216);
    pub const BALANCER: Color = Color(229, 219, 255);
    pub const BACKEND: Color = Color(255, 232, 204);
    pub const OTHER: Color = Color(241, 243, 245);
    pub const RED: Color = Color(201, 42, 42);
    pub const BLUE: Color = Color(24, 100, 171);
    pub const GREEN: Color = Color(43, 138, 62);
    pub const GREY: Color = Color(134, 142, 150);
    pub const PURPLE: Color = Color(103, 65, 217);

    fn rgb(self) -> RGBColor {
        RGBColor(self.0, self.1, self.2)
    }
}

/// An SVG being drawn.
pub struct Canvas {
    buf: String,
    size: (u32, u32),
    ops: Vec<Op>,
}

enum Op {
    Rect(i32, i32, i32, i32, Color, Color),
    Text(i32, i32, String, u32, Color, HPos),
    Line(i32, i32, i32, i32, Color, u32),
    Poly(Vec<(i32, i32)>, Color),
}

impl Canvas {
    /// A blank canvas of `width` x `height` pixels.
    pub fn new(width: u32, height: u32) -> Canvas {
        Canvas {
            buf: String::new(),
            size: (width.max(1), height.max(1)),
            ops: Vec::new(),
        }
    }

    /// A filled box with a border.
    pub fn rect(&mut self, x: i32, y: i32, w: i32, h: i32, fill: Color, stroke: Color) {
        self.ops.push(Op::Rect(x, y, w, h, fill, stroke));
    }

    /// Text with its top-left corner at (x, y).
    pub fn text(&mut self, x: i32, y: i32, text: &str, size: u32, color: Color) {
        self.ops
            .push(Op::Text(x, y, text.to_string(), size, color, HPos::Left));
    }

    /// Text centred horizontally on x.
    pub fn text_centered(&mut self, x: i32, y: i32, text: &str, size: u32, color: Color) {
        self.ops
            .push(Op::Text(x, y, text.to_string(), size, color, HPos::Center));
    }

    /// A straight line.
    pub fn line(&mut self, from: (i32, i32), to: (i32, i32), color: Color, width: u32) {
        self.ops
            .push(Op::Line(from.0, from.1, to.0, to.1, color, width));
    }

    /// A line with an arrowhead at `to`.
    pub fn arrow(&mut self, from: (i32, i32), to: (i32, i32), color: Color) {
        self.line(from, to, color, 2);
        let (dx, dy) = ((to.0 - from.0) as f64, (to.1 - from.1) as f64);
        let len = (dx * dx + dy * dy).sqrt().max(1.0);
        let (ux, uy) = (dx / len, dy / len);
        let (bx, by) = (to.0 as f64 - ux * 9.0, to.1 as f64 - uy * 9.0);
        let p1 = ((bx - uy * 4.5) as i32, (by + ux * 4.5) as i32);
        let p2 = ((bx + uy * 4.5) as i32, (by - ux * 4.5) as i32);
        self.ops.push(Op::Poly(vec![to, p1, p2], color));
    }

    /// Renders the SVG document.
    pub fn finish(mut self) -> String {
        {
            let mut b = SVGBackend::with_string(&mut self.buf, self.size);
            let _ = b.draw_rect(
                (0, 0),
                (self.size.0 as i32, self.size.1 as i32),
                &WHITE,
                true,
            );
            for op in &self.ops {
                // Drawing into a String cannot fail; errors are ignored.
                let _ = match op {
                    Op::Rect(x, y, w, h, fill, stroke) => b
                        .draw_rect((*x, *y), (x + w, y + h), &fill.rgb(), true)
                        .and_then(|_| b.draw_rect((*x, *y), (x + w, y + h), &stroke.rgb(), false)),
                    Op::Text(x, y, text, size, color, h) => {
                        let rgb = color.rgb();
                        let style = TextStyle::from(("monospace", f64::from(*size)).into_font())
                            .color(&rgb)
                            .pos(Pos::new(*h, VPos::Top));
                        b.draw_text(text, &style, (*x, *y))
                    }
                    Op::Line(x1, y1, x2, y2, color, width) => {
                        b.draw_line((*x1, *y1), (*x2, *y2), &color.rgb().stroke_width(*width))
                    }
                    Op::Poly(points, color) => b.fill_polygon(points.iter().copied(), &color.rgb()),
                };
            }
            let _ = b.present();
        }
        self.buf
    }
}
