"""Glyphs: letters rendered from the fonts inside matplotlib, an offline Omniglot-like data set.

Every class is one letter (``"LATIN CAPITAL LETTER E WITH ACUTE"``) of five scripts (Latin,
Greek, Cyrillic, Armenian, Georgian); its examples are the letter drawn by the font faces that
ship inside matplotlib, each under a random affine jitter (rotation, scale, shear, shift). It
stands in for Omniglot (a few drawers' versions of each character) and, through the class
descriptions, for an attribute data set: each class is described by its Unicode name cut into
fields, ``"script:latin case:capital letter:e mark:acute"`` (script, case, letter, and one
``mark:`` word per diacritic or modifier). It is a stand-in: font faces are not hand drawings
and Unicode names are not visual attributes; the loaders for Omniglot
(:mod:`hyperdnn.data.omniglot`) and AwA2 (:mod:`hyperdnn.data.awa2`) read the real ones.

**Faces.** DejaVu Sans, Sans Mono and Serif (four styles each), STIX General (four styles) and
the Computer Modern text faces ``cmr10, cmti10, cmss10, cmtt10, cmb10, cmmi10``, the last only
for ``A-Z a-z`` (they keep TeX encodings on every other slot). ``LastResortHE`` (a placeholder
for every code point), ``STIXNonUni`` (private-use code points), the STIX size variants, the
two ``Display`` faces and ``cmsy10``/``cmex10`` draw no letters and are left out.

**Classes** (:data:`GLYPH_CLASSES`, 1,481 letters: Latin 879, Greek 259, Cyrillic 149,
Georgian 119, Armenian 75) are what :func:`select_glyph_classes` picks from every letter these
faces cover: drawn by at least :data:`MIN_FACES` visibly different faces (two renders are
the same when their 28x28 pixels, ink in ``[0, 1]``, differ by at most 1 in sum), and not a look-alike of a class picked
before it (Latin first, then Greek, Cyrillic, Armenian, Georgian; two classes look alike when
on at least half of the faces both have, their renders are the same): Greek capital alpha and
Cyrillic a are left out for Latin A and a. The list is stored, so the classes are the same on
every machine; ``tests/test_glyphs.py`` checks that the faces here still draw each of them.

**Rendering** takes about 7 s on one core for all classes (Pillow draws each letter once per
face at twice the size; the jitter is one batched ``grid_sample``); the letters' renders are
kept in memory for the process, so a second load with another seed or sample count only
jitters. Nothing is written to disk.

Example::

    >>> from hyperdnn.data.glyphs import describe_letter, load_glyphs
    >>> describe_letter("É")
    'script:latin case:capital letter:e mark:acute'
    >>> data = load_glyphs(samples=4, classes="AbЖ")
    >>> data.x.shape, data.classes[2], data.groups
    (torch.Size([12, 1, 28, 28]), 'CYRILLIC CAPITAL LETTER ZHE', ('latin', 'latin', 'cyrillic'))
"""

from __future__ import annotations

import functools
import math
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from hyperdnn._checks import check_float, check_int
from hyperdnn.data.classes import ClassData
from hyperdnn.data.registry import Dataset, register_dataset
from hyperdnn.extras import import_optional

__all__ = [
    "GLYPH_CLASSES",
    "SCRIPTS",
    "MIN_FACES",
    "FontFace",
    "Jitter",
    "font_faces",
    "describe_letter",
    "script_of",
    "render_letters",
    "load_glyphs",
    "select_glyph_classes",
]

#: the scripts of the glyph classes, in the order look-alikes are resolved
SCRIPTS = ("latin", "greek", "cyrillic", "armenian", "georgian")
#: visibly different faces a class needs
MIN_FACES = 8
_COMPUTER_MODERN = ("cmr10", "cmti10", "cmss10", "cmtt10", "cmb10", "cmmi10")
#: two renders are the same when their pixels (ink in [0, 1], at 28x28) differ by at most this in sum
_SAME = 1.0
_ASCII_LETTERS = frozenset(map(ord, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))

# fmt: off
#: the 1,481 classes, as select_glyph_classes() picks them from the faces of matplotlib 3.11
GLYPH_CLASSES = (
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyzÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖØÙÚÛÜÝÞßàáâãäåæçèéêëìíîïð"
    "ñòóôõöøùúûüýþÿĀāĂăĄąĆćĈĉĊċČčĎďđĒēĔĕĖėĘęĚěĜĝĞğĠġĢģĤĥĦħĨĩĪīĬĭĮįİıĴĵĶķĸĹĺĻļĽľŁłŃńŅņŇňŊŋŌōŎŏŐőŔŕŖŗŘřŚśŜŝ"
    "ŞşŠšŢţŤťŦŧŨũŪūŬŭŮůŰűŲųŴŵŶŷŸŹźŻżŽžƀƁƂƃƄƅƆƇƈƊƋƌƍƎƏƐƑƒƓƔƕƖƗƘƙƚƛƜƝƞƟƠơƢƣƤƥƦƧƨƩƪƫƬƭƮƯưƱƲƳƴƵƶƷƸƹƺƻƼƽƾƿǀǁǂǃ"
    "ǍǎǏǐǑǒǓǔǕǖǗǘǙǚǛǜǝǞǟǠǡǢǣǤǥǦǧǨǩǪǫǬǭǮǯǰǴǵǶǷǸǹǺǻǼǽǾǿȀȁȂȃȄȅȆȇȈȉȊȋȌȍȎȏȐȑȒȓȔȕȖȗȘșȚțȜȝȞȟȠȡȢȣȤȥȦȧȨȩȪȫȬȭȮȯȰȱȲȳ"
    "ȴȵȶȷȸȹȺȻȼȽȾȿɀɁɂɃɄɅɆɇɈɉɊɋɌɍɎɏɐɑɒɓɔɕɖɗɘɚɛɜɝɞɟɠɡɢɣɤɥɦɧɨɩɪɫɬɭɮɯɰɱɲɳɴɵɶɷɸɹɺɻɼɽɾɿʀʁʂʃʄʅʆʇʈʉʊʋʌʍʎʏʐʑʒʓʔʕʖʗʘ"
    "ʙʚʛʜʝʞʟʠʡʢʣʤʥʦʧʨʩʪʫʬʭʮʯᴀᴁᴂᴃᴅᴆᴇᴈᴉᴊᴌᴍᴎᴑᴒᴓᴔᴖᴗᴘᴙᴚᴛᴜᴝᴞᴟᴣᵷᵻᵽᶅḀḁḂḃḄḅḆḇḈḉḊḋḌḍḎḏḐḑḒḓḔḕḖḗḘḙḚḛḜḝḞḟḠḡḢḣḤḥḦḧḨḩḪḫḬ"
    "ḭḮḯḰḱḲḳḴḵḶḷḸḹḺḻḼḽḾḿṀṁṂṃṄṅṆṇṈṉṊṋṌṍṎṏṐṑṒṓṔṕṖṗṘṙṚṛṜṝṞṟṠṡṢṣṤṥṦṧṨṩṪṫṬṭṮṯṰṱṲṳṴṵṶṷṸṹṺṻṼṽṾṿẀẁẂẃẄẅẆẇẈẉẊẋẌẍẎẏẐ"
    "ẑẒẓẔẕẖẗẘẙẛẜẝẞẟẠạẢảẤấẦầẨẩẪẫẬậẮắẰằẲẳẴẵẶặẸẹẺẻẼẽẾếỀềỂểỄễỆệỈỉỊịỌọỎỏỐốỒồỔổỖỗỘộỚớỜờỞởỠỡỢợỤụỦủỨứỪừỬửỮữỰựỲỳỴỵ"
    "ỶỷỸỹỺỻⱠⱡⱣⱤⱧⱨⱩⱪⱫⱬⱭⱮⱯⱰⱱⱲⱳⱵⱶⱷⱹⱺⱻⱾⱿꜢꜣꜤꜥꜦꜧꜨꜩꜫꜰꜲꜳꜴꜵꜶꜷꜸꜹꜺꜻꜼꜽꜾꜿꝀꝁꝆꝇꝊꝋꝎꝏꞀꞁꞂꞃꞋꞍꞎꞐꞑꞪꟺꟻꟼꟽꟾꟿͲͳͶΆΈΉΊΌΎΏΐΓΔΘΞΠΦΨΩΫά"
    "έήίΰαβγζηθικλμνξπρςστυφχψωϊϋύώϘϙϚϛϝϞϟϠϡϺϻᴦᴪἀἁἂἃἄἅἆἇἈἉἊἋἌἍἎἏἐἑἒἓἔἕἘἙἚἛἜἝἠἡἢἣἤἥἦἧἨἩἪἫἬἭἮἯἰἱἲἳἴἵἶἷἸἹἺἻἼ"
    "ἽἾἿὀὁὂὃὄὅὈὉὊὋὌὍὐὑὒὓὔὕὖὗὙὛὝὟὠὡὢὣὤὥὦὧὨὩὪὫὬὭὮὯὰὲὴὶὺὼᾀᾁᾂᾃᾄᾅᾆᾇᾈᾉᾊᾋᾌᾍᾎᾏᾐᾑᾒᾓᾔᾕᾖᾗᾘᾙᾚᾛᾜᾝᾞᾟᾠᾡᾢᾣᾤᾥᾦᾧᾨᾩᾪᾫᾬᾭᾮᾯᾰᾱᾲ"
    "ᾳᾴᾶᾷᾺᾼῂῃῄῆῇῈῊῌῐῑῒῖῗῚῠῡῢῤῥῦῧῨῪῬῲῳῴῶῷῸῺῼЂЃЄЉЊЋЌЍЎЏГДЖЗЙКЛУФЦШЩЪЫЬЭЮЯбвгджзйклнпфцчщъыьэюяѐёђѓєљњћќѝўџѢ"
    "ѣѤѥѪѫѬѭѰѱѴѵѶѷҌҍҐґҒғҔҕҖҗҘҙҚқҞҟҠҡңҦҧҬҭүҰұҲҳҶҷҺӁӂӃӄӇӈӋӌӏӚӛӜӝӞӟӢӣӤӥӪӫӬӭӮӰӲӳӴӵӶӷӸӹԒԓԔԕꙐꙑꙔꙕꙖꙗԱԲԳԴԵԶԷԸԹԺԻԼԽ"
    "ԾԿՀՁՂՃՄՅՆՇՈՉՊՋՌՍՎՏՐՑՒՓՔՖՙաբգդեզէըթժիլխծկհձղճմյնշոչպջռսվտրցւփքֆႠႡႢႣႤႥႦႧႨႩႪႫႬႭႮႯႰႱႲႳႴႵႶႷႸႹႺႻႼႽႾႿჀჁჂჃჄჅ"
    "აბგდევზთიკლმნოპჟრსტუფქღყშჩცძწჭხჯჰჱჲჳჴჵჶჷჸჹჺⴀⴁⴂⴃⴄⴅⴆⴇⴈⴉⴊⴋⴌⴍⴎⴏⴐⴑⴒⴓⴔⴕⴖⴗⴘⴙⴚⴛⴜⴝⴞⴟⴠⴡⴢⴣⴤⴥ"
)
# fmt: on


@dataclass(frozen=True)
class FontFace:
    """A font face that draws letters.

    Attributes:
        name: the file's stem (``"DejaVuSerif-Italic"``).
        path: the TrueType file.
        code_points: the letters it draws (for Computer Modern: ``A-Z a-z`` only).
    """

    name: str
    path: Path
    code_points: frozenset[int]


@functools.cache
def font_faces() -> tuple[FontFace, ...]:
    """The faces inside matplotlib that draw letters, sorted by name (see the module notes)."""
    matplotlib = import_optional("matplotlib", "apps", "the glyphs data set")
    ft2font = import_optional("matplotlib.ft2font", "apps", "the glyphs data set")
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    faces = []
    for path in sorted(folder.glob("*.ttf")):
        name = path.stem
        dejavu = name.startswith("DejaVu") and "Display" not in name
        stix = name.startswith("STIXGeneral")
        if not (dejavu or stix or name in _COMPUTER_MODERN):
            continue
        covered = frozenset(c for c in ft2font.FT2Font(str(path)).get_charmap() if _is_letter(c))
        faces.append(FontFace(name, path, covered & _ASCII_LETTERS if name in _COMPUTER_MODERN else covered))
    if not faces:
        raise FileNotFoundError(f"the glyphs data set: no DejaVu, STIX or Computer Modern fonts in {str(folder)!r}")
    return tuple(faces)


def _is_letter(code_point: int) -> bool:
    """A letter of :data:`SCRIPTS` whose name says ``LETTER`` and that is not a compatibility
    form (superscripts, ligatures, full-width forms)."""
    ch = chr(code_point)
    if not unicodedata.category(ch).startswith("L") or unicodedata.decomposition(ch).startswith("<"):
        return False
    name = unicodedata.name(ch, "")
    return name.split(" ")[0].lower() in SCRIPTS and " LETTER " in name


def _fields(letter: str) -> tuple[str, str, str, list[str]]:
    """``(script, case, letter, marks)`` of a letter's Unicode name."""
    if not isinstance(letter, str) or len(letter) != 1:
        raise ValueError(f"describe_letter: expected one character, got {letter!r}")
    if not _is_letter(ord(letter)):
        raise ValueError(
            f"describe_letter: {letter!r} ({unicodedata.name(letter, 'unnamed')}) is not a letter of {', '.join(SCRIPTS)}"
        )
    words = unicodedata.name(letter).split()
    at = words.index("LETTER")
    case, rest = words[1:at], words[at + 1 :]
    if rest[:2] == ["SMALL", "CAPITAL"]:
        case, rest = ["SMALL", "CAPITAL"], rest[2:]
    marks: list[str] = []
    if "WITH" in rest:
        cut = rest.index("WITH")
        rest, marks = rest[:cut], " ".join(rest[cut + 1 :]).split(" AND ")
    return words[0], " ".join(case), " ".join(rest), marks


def script_of(letter: str) -> str:
    """The script of a letter of :data:`SCRIPTS` (``"latin"`` ...; ``ValueError`` for another character)."""
    return _fields(letter)[0].lower()


def describe_letter(letter: str) -> str:
    """The description of a glyph class: its Unicode name as ``field:value`` words.

    ``script:<script>``, ``case:<case>`` (capital, small, small_capital...; absent for letters
    without case), ``letter:<letter>`` and one ``mark:<mark>`` per diacritic or modifier after
    ``WITH``; lower case, spaces inside a value as ``_``.

    Args:
        letter: one character, a letter of :data:`SCRIPTS`.

    Raises:
        ValueError: not one character, or not such a letter.
    """
    script, case, name, marks = _fields(letter)
    words = [f"script:{script}"] + ([f"case:{case}"] if case else []) + [f"letter:{name}"]
    words += [f"mark:{m}" for m in marks]
    return " ".join(w.lower().replace(" ", "_") for w in words)


@dataclass(frozen=True)
class Jitter:
    """The random affine transform of each example (drawn independently per example).

    Args:
        rotation: the largest rotation, in degrees (uniform in ``[-rotation, rotation]``).
        scale: the largest relative change of size (log-uniform in ``[1/(1+scale), 1+scale]``).
        shear: the largest shear factor (uniform in ``[-shear, shear]``).
        shift: the largest shift, as a fraction of the image side (uniform per axis).
    """

    rotation: float = 12.0
    scale: float = 0.12
    shear: float = 0.15
    shift: float = 0.06

    def __post_init__(self) -> None:
        check_float("Jitter", "rotation", self.rotation, 0.0, 90.0)
        check_float("Jitter", "scale", self.scale, 0.0, 1.0)
        check_float("Jitter", "shear", self.shear, 0.0, 1.0)
        check_float("Jitter", "shift", self.shift, 0.0, 0.5)

    def matrices(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``(n, 2, 3)`` affine matrices for ``F.affine_grid`` (output -> input coordinates)."""
        u = torch.rand(n, 5, generator=generator, dtype=torch.float64) * 2 - 1  # (n, 5) in [-1, 1]
        angle = u[:, 0] * math.radians(self.rotation)
        s = torch.exp(u[:, 1] * math.log1p(self.scale))
        cos, sin, shear = torch.cos(angle) / s, torch.sin(angle) / s, u[:, 2] * self.shear
        a = torch.stack([torch.stack([cos, -sin + shear * cos], -1), torch.stack([sin, cos + shear * sin], -1)], 1)
        shift = (u[:, 3:] * self.shift * 2).unsqueeze(-1)  # the image spans [-1, 1]: a side is 2
        return torch.cat([a, shift], -1).float()


def _render(letter: str, face: FontFace, canvas: int):
    """One letter of one face on a ``canvas x canvas`` uint8 array, centred horizontally on a
    fixed baseline (so small and capital letters keep their sizes)."""
    pil = _pillow()
    image = pil.Image.new("L", (canvas, canvas), 0)
    # the em is 0.68 of the side and the baseline at 0.76: 99.5% of the letters' ink lies inside
    font = _pil_font(str(face.path), round(0.68 * canvas))
    pil.ImageDraw.Draw(image).text((canvas / 2, 0.76 * canvas), letter, fill=255, font=font, anchor="ms")
    return image


@functools.cache
def _pillow():
    """Pillow's modules (it comes with matplotlib)."""
    for module in ("PIL.Image", "PIL.ImageDraw", "PIL.ImageFont"):
        import_optional(module, "apps", "the glyphs data set")
    import PIL

    return PIL


@functools.cache
def _pil_font(path: str, pixels: int):
    return _pillow().ImageFont.truetype(path, pixels)


@dataclass(frozen=True)
class _Renders:
    """Every face's render of some letters: ``images`` uint8 ``(M, 2s, 2s)``; per row the
    letter (``letter``) and the face (``face``) it shows, and whether it is one of the letter's
    visibly different renders (``distinct``: it has ink and differs from every earlier face's)."""

    images: torch.Tensor
    letter: torch.Tensor
    face: torch.Tensor
    distinct: torch.Tensor

    def small(self) -> torch.Tensor:
        """float ``(M, s * s)``: each render averaged down to ``s x s``, ink in ``[0, 1]``."""
        return F.avg_pool2d(self.images.unsqueeze(1).float() / 255, 2).flatten(1)

    def rows(self, n: int) -> list[list[int]]:
        """Per letter ``0 .. n - 1``, the rows of its visibly different renders, in face order."""
        rows: list[list[int]] = [[] for _ in range(n)]
        for r in self.distinct.nonzero()[:, 0].tolist():
            rows[int(self.letter[r])].append(r)
        return rows


@functools.lru_cache(maxsize=4)
def _letter_renders(letters: str, size: int) -> _Renders:
    """:class:`_Renders` of ``letters`` at ``2 * size``, kept for the process (the slow part)."""
    numpy = import_optional("numpy", "data", "the glyphs data set")
    images, letter, face = [], [], []
    for i, ch in enumerate(letters):
        for k, f in enumerate(font_faces()):
            if ord(ch) in f.code_points:
                images.append(torch.from_numpy(numpy.asarray(_render(ch, f, 2 * size), dtype=numpy.uint8).copy()))
                letter.append(i)
                face.append(k)
    stacked = torch.stack(images) if images else torch.zeros(0, 2 * size, 2 * size, dtype=torch.uint8)
    out = _Renders(stacked, torch.tensor(letter, dtype=torch.long), torch.tensor(face, dtype=torch.long), torch.zeros(len(images), dtype=torch.bool))  # fmt: skip
    small = out.small()
    start = 0
    for i in range(len(letters)):
        stop = start
        while stop < len(letter) and letter[stop] == i:
            stop += 1
        kept: list[int] = []
        for r in range(start, stop):
            if float(small[r].sum()) > _SAME and all(float((small[r] - small[q]).abs().sum()) > _SAME for q in kept):
                kept.append(r)
        out.distinct[kept] = True
        start = stop
    return out


def render_letters(
    letters: str, size: int = 28, samples: int = 20, seed: int = 0, jitter: Jitter | None = None
) -> torch.Tensor:
    """``samples`` jittered images of each letter: float ``(len(letters), samples, 1, size, size)``
    in ``[0, 1]`` (ink is 1).

    Sample ``i`` of a letter is drawn by face ``order[i % faces]`` of its visibly different faces
    (``order`` a random permutation per letter), so the faces are used evenly; every random
    number comes from ``seed``: the same arguments give the same images.

    Args:
        letters: the classes, one character each (distinct letters of :data:`SCRIPTS`).
        size: the image side in pixels (rendered at twice the size, then averaged down).
        samples: images per letter.
        seed: draws the face order and the jitter.
        jitter: the affine jitter (default :class:`Jitter`; ``Jitter(0, 0, 0, 0)``: none).

    Raises:
        ValueError: a repeated character, a character that is not such a letter, or one no face
            draws (all of them named).
    """
    check_int("render_letters", "size", size, 8)
    check_int("render_letters", "samples", samples)
    check_int("render_letters", "seed", seed, 0)
    jitter = Jitter() if jitter is None else jitter
    if not isinstance(jitter, Jitter):
        raise TypeError(f"render_letters: jitter must be a Jitter or None, got {type(jitter).__name__}")
    if not isinstance(letters, str) or not letters or len(set(letters)) != len(letters):
        raise ValueError(f"render_letters: letters must be a string of distinct characters, got {letters!r}")
    bad = [ch for ch in letters if not _is_letter(ord(ch))]
    if bad:
        raise ValueError(f"render_letters: not letters of {', '.join(SCRIPTS)}: {''.join(bad)!r}")
    renders = _letter_renders(letters, size)
    rows = renders.rows(len(letters))
    undrawn = [ch for ch, r in zip(letters, rows) if not r]
    if undrawn:
        raise ValueError(f"render_letters: no font face here draws {''.join(undrawn)!r}")
    g = torch.Generator().manual_seed(seed)
    pick = []
    for r in rows:
        order = torch.randperm(len(r), generator=g)
        pick += [r[int(order[i % len(r)])] for i in range(samples)]
    theta = jitter.matrices(len(pick), g)
    side = 2 * size
    axis = (torch.arange(side) * 2 + 1) / side - 1  # pixel centres in [-1, 1], as affine_grid puts them
    points = torch.stack(
        [axis.repeat(side), axis.repeat_interleave(side), torch.ones(side * side)], 1
    )  # (P, 3): x, y, 1
    images = []
    for part, th in zip(torch.tensor(pick).split(2048), theta.split(2048)):
        base = renders.images[part].unsqueeze(1).float() / 255  # (n, 1, 2s, 2s)
        grid = (points @ th.transpose(1, 2)).view(len(part), side, side, 2)  # what F.affine_grid computes
        moved = F.grid_sample(base, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        images.append(F.avg_pool2d(moved, 2).clamp_(0, 1))
    return torch.cat(images).reshape(len(letters), samples, 1, size, size)


def load_glyphs(
    size: int = 28,
    samples: int = 20,
    seed: int = 0,
    scripts: tuple[str, ...] = SCRIPTS,
    classes: str | None = None,
    jitter: Jitter | None = None,
) -> ClassData:
    """The glyphs data set: ``samples`` jittered images of each class, with its description.

    Args:
        size: the image side in pixels.
        samples: images per class (Omniglot has 20).
        seed: draws the faces' order and the jitter (the classes do not depend on it).
        scripts: keep the classes of these scripts (of :data:`SCRIPTS`).
        classes: the letters to use instead of :data:`GLYPH_CLASSES` (then ``scripts`` filters them).
        jitter: the affine jitter (default :class:`Jitter`).

    Returns:
        A :class:`~hyperdnn.data.classes.ClassData`: ``x`` float ``(K * samples, 1, size, size)``
        class by class, ``classes`` the Unicode names, ``groups`` the scripts, ``descriptions``
        from :func:`describe_letter`.

    Raises:
        ValueError: an unknown script, no class left, or a letter no face draws.
    """
    if isinstance(scripts, str) or not isinstance(scripts, (tuple, list)) or not scripts:
        raise TypeError(f"load_glyphs: scripts must be a non-empty tuple of {SCRIPTS}, got {scripts!r}")
    unknown = [s for s in scripts if s not in SCRIPTS]
    if unknown:
        raise ValueError(f"load_glyphs: unknown scripts {unknown}; expected some of {list(SCRIPTS)}")
    pool = GLYPH_CLASSES if classes is None else classes
    if not isinstance(pool, str):
        raise TypeError(f"load_glyphs: classes must be a string of letters or None, got {type(pool).__name__}")
    bad = [ch for ch in pool if not _is_letter(ord(ch))]
    if bad:
        raise ValueError(f"load_glyphs: not letters of {', '.join(SCRIPTS)}: {''.join(bad)!r}")
    letters = "".join(ch for ch in pool if _fields(ch)[0].lower() in scripts)
    if not letters:
        raise ValueError(f"load_glyphs: no class of {pool[:20]!r}... is in the scripts {list(scripts)}")
    x = render_letters(letters, size, samples, seed, jitter)
    y = torch.arange(len(letters)).repeat_interleave(samples)
    names = tuple(unicodedata.name(ch) for ch in letters)
    groups = tuple(_fields(ch)[0].lower() for ch in letters)
    return ClassData("glyphs", x.flatten(0, 1), y, names, groups, tuple(describe_letter(ch) for ch in letters))


def select_glyph_classes(candidates: str | None = None, min_faces: int = MIN_FACES, size: int = 28) -> str:
    """Pick glyph classes (how :data:`GLYPH_CLASSES` was made): keep a letter drawn by at least
    ``min_faces`` visibly different faces that is not a look-alike of a letter kept before it.

    Letters are taken by script (:data:`SCRIPTS` order), then by code point. Two renders are
    the same when, binarised at ``size x size``, at most one pixel differs; two letters look
    alike when their renders are the same on at least half of the faces that draw both.

    Args:
        candidates: the letters to choose from (default: every letter the faces draw).
        min_faces: visibly different faces a letter needs.
        size: the side at which renders are compared.

    Returns:
        The kept letters, in that order.
    """
    check_int("select_glyph_classes", "min_faces", min_faces)
    if candidates is None:
        covered = set().union(*(f.code_points for f in font_faces()))
        candidates = "".join(chr(c) for c in sorted(covered))
    letters = sorted((ch for ch in candidates if _is_letter(ord(ch))), key=lambda ch: (SCRIPTS.index(_fields(ch)[0].lower()), ord(ch)))  # fmt: skip
    renders = _letter_renders("".join(letters), size)
    n, nf = len(letters), len(font_faces())
    # face by face: which pairs of letters it draws, and which of those it draws the same
    shared, same = torch.zeros(n, n), torch.zeros(n, n)
    small = renders.small()
    for k in range(nf):
        on = renders.face == k
        who, images = renders.letter[on], small[on]
        shared[who[:, None], who[None]] += 1.0
        # close pairs first (few pixels differ once cut at half ink), then their exact distance
        bits = (images > 0.5).float()
        ink = bits.sum(1)
        close = (ink[:, None] + ink[None] - 2 * bits @ bits.T <= 4 * _SAME + 4).nonzero()
        for a, b in close.tolist():
            if a < b and float((images[a] - images[b]).abs().sum()) <= _SAME:
                same[who[a], who[b]] += 1.0
                same[who[b], who[a]] += 1.0
    faces_per_letter = torch.bincount(renders.letter[renders.distinct], minlength=n)
    kept: list[int] = []
    for i in range(n):
        if int(faces_per_letter[i]) < min_faces:
            continue
        if kept and bool(((2 * same[i, kept] >= shared[i, kept]) & (shared[i, kept] > 0)).any()):
            continue
        kept.append(i)
    return "".join(letters[i] for i in kept)


register_dataset(
    Dataset(
        "glyphs",
        f"letters of 5 scripts drawn by matplotlib's fonts, jittered ({len(GLYPH_CLASSES):,} classes x 20)",
        lambda seed, root: load_glyphs(seed=seed).to_split(0.2, seed),
        (1, 28, 28),
        len(GLYPH_CLASSES),
        len(GLYPH_CLASSES) * 20,
        requires={"matplotlib": "apps", "PIL": "apps"},
        classes=lambda seed, root: load_glyphs(seed=seed),
    )
)
