"""The fictional world the four case studies are drawn from, and its encyclopedia passages.

Written out by hand: provinces, towns, rivers, people and their works. Every name is unique and no
name is a word of another name, so "the answer appears in the passage" is a plain substring check.
"""

from __future__ import annotations

from dataclasses import dataclass

# --------------------------------------------------------------------------------------------------------------
# The world. Every name is unique, and no name is a word of another name, so that "answer appears in passage"
# can be checked with plain normalised substring matching.
# --------------------------------------------------------------------------------------------------------------

# (name, description, capital)
PROVINCES = [
    ("Ostrel", "a northern province of pine forests and cold lakes", "Velmora"),
    ("Varnmark", "a coastal province on the Gray Sea", "Port Halden"),
    ("Cedrowa", "a hilly province in the east", "Mirrowby"),
    ("Lusk", "a flat inland province of wheat fields", "Greyharrow"),
    ("Tamberly", "a windy province along the Amber Sea", "Linden Ford"),
    ("Dravony", "a mountainous province in the south", "Zelmar"),
    ("Sellin", "a small central province of old market towns", "Nevra"),
    ("Quorra", "a western province of lakes and islands", "Dunmere"),
]

# (name, kind, province, founded, known for, river or None)
TOWNS = [
    ("Velmora", "river town", "Ostrel", 1642, "glass works", "Tarn"),
    ("Kestin", "mining town", "Ostrel", 1710, "salt mines", None),
    ("Drabeck", "forest town", "Ostrel", 1588, "wooden toys", "Tarn"),
    ("Ulmsfeld", "market town", "Ostrel", 1803, "horse fair", "Ossel"),
    ("Port Halden", "port town", "Varnmark", 1521, "shipyards", "Brime"),
    ("Brisk", "market town", "Varnmark", 1766, "cheese market", "Brime"),
    ("Tollow", "mining town", "Varnmark", 1690, "copper mines", None),
    ("Ambervale", "valley town", "Varnmark", 1612, "clock makers", "Kelva"),
    ("Mirrowby", "river town", "Cedrowa", 1655, "silk weaving", "Kelva"),
    ("Cadrin", "hill town", "Cedrowa", 1744, "apple orchards", None),
    ("Felstow", "quarry town", "Cedrowa", 1599, "stone quarries", "Wendle"),
    ("Oskava", "hill town", "Cedrowa", 1820, "observatory", "Wendle"),
    ("Greyharrow", "market town", "Lusk", 1502, "wool trade", "Lorrow"),
    ("Penlow", "mill town", "Lusk", 1688, "paper mills", "Lorrow"),
    ("Vostry", "small town", "Lusk", 1731, "blue pottery", None),
    ("Hallam Cross", "railway town", "Lusk", 1640, "railway works", "Emmet"),
    ("Eskerby", "fishing town", "Tamberly", 1577, "herring fleet", None),
    ("Rudmoor", "moorland town", "Tamberly", 1795, "peat bogs", "Emmet"),
    ("Linden Ford", "river town", "Tamberly", 1623, "bell foundry", "Varra"),
    ("Coralby", "coastal town", "Tamberly", 1701, "oyster beds", "Varra"),
    ("Zelmar", "trading town", "Dravony", 1560, "spice market", "Stillwater"),
    ("Orvieck", "mountain town", "Dravony", 1712, "marble carving", None),
    ("Tessaly", "lake town", "Dravony", 1649, "violin makers", "Stillwater"),
    ("Brannock", "industrial town", "Dravony", 1788, "iron works", "Ossel"),
    ("Quillon", "river town", "Sellin", 1604, "printing presses", "Ossel"),
    ("Marrowgate", "walled town", "Sellin", 1677, "leather tanneries", None),
    ("Ashcombe", "hill town", "Sellin", 1751, "tea gardens", "Wendle"),
    ("Nevra", "university town", "Sellin", 1530, "old university", "Ossel"),
    ("Islebrook", "lake town", "Quorra", 1618, "summer boat races", "Varra"),
    ("Harth", "farming town", "Quorra", 1699, "windmills", None),
    ("Skarn", "upland town", "Quorra", 1742, "sheep farms", None),
    ("Dunmere", "lakeside town", "Quorra", 1666, "rose gardens", "Kelva"),
]

# (name, where the name reads naturally after "rises", description)
SOURCES = [
    ("Keldar Hills", "in the Keldar Hills", "The Keldar Hills are a range of low granite hills in the far north."),
    ("Mount Orrin", "on Mount Orrin", "Mount Orrin is a snow-capped peak and the highest point of the west."),
    ("Sabre Peaks", "in the Sabre Peaks", "The Sabre Peaks are a chain of sharp limestone summits in the east."),
    ("Drum Moor", "on Drum Moor", "Drum Moor is a high, wet upland covered in heather and bog."),
]

# (name, description)
SEAS = [
    ("Gray Sea", "The Gray Sea is a cold, shallow sea off the northern coast, known for its fogs."),
    ("Amber Sea", "The Amber Sea is a warm southern sea with long sandy beaches."),
    ("Bitter Sea", "The Bitter Sea is a salty inland sea in the east with no outlet to the ocean."),
    ("Pale Sea", "The Pale Sea is a stormy western sea dotted with small islands."),
]

# (name, source, length in km, sea)
RIVERS = [
    ("Tarn", "Keldar Hills", 210, "Gray Sea"),
    ("Ossel", "Mount Orrin", 340, "Bitter Sea"),
    ("Brime", "Keldar Hills", 95, "Gray Sea"),
    ("Kelva", "Sabre Peaks", 180, "Pale Sea"),
    ("Wendle", "Sabre Peaks", 120, "Bitter Sea"),
    ("Lorrow", "Drum Moor", 150, "Gray Sea"),
    ("Emmet", "Drum Moor", 70, "Amber Sea"),
    ("Varra", "Mount Orrin", 260, "Amber Sea"),
    ("Stillwater", "Sabre Peaks", 88, "Pale Sea"),
]

# (name, pronoun, profession, birthplace, birth year); works are attached from the tables below.
PEOPLE = [
    ("Mirela Vasko", "She", "film director", "Velmora", 1931),
    ("Tomas Erlund", "He", "film director", "Brisk", 1944),
    ("Ilse Marrin", "She", "film director", "Cadrin", 1952),
    ("Jonah Kell", "He", "film director", "Penlow", 1939),
    ("Rosa Dunstan", "She", "film director", "Zelmar", 1960),
    ("Pavel Orsk", "He", "film director", "Quillon", 1948),
    ("Edda Lintz", "She", "film director", "Islebrook", 1957),
    ("Kaspar Holm", "He", "film director", "Rudmoor", 1935),
    ("Nadia Ferro", "She", "film director", "Tessaly", 1966),
    ("Viktor Sayle", "He", "film director", "Kestin", 1941),
    ("Lotte Vane", "She", "film director", "Harth", 1953),
    ("Oren Castel", "He", "film director", "Vostry", 1947),
    ("Agata Pell", "She", "novelist", "Drabeck", 1902),
    ("Hugo Stenmark", "He", "novelist", "Port Halden", 1889),
    ("Clara Oddny", "She", "novelist", "Felstow", 1915),
    ("Ivo Rasmund", "He", "novelist", "Greyharrow", 1897),
    ("Selma Tork", "She", "poet", "Linden Ford", 1921),
    ("Benedikt Arro", "He", "novelist", "Orvieck", 1908),
    ("Greta Holloway", "She", "novelist", "Nevra", 1926),
    ("Matthias Krone", "He", "novelist", "Dunmere", 1911),
    ("Yara Sollen", "She", "poet", "Mirrowby", 1934),
    ("Anton Weyl", "He", "novelist", "Eskerby", 1899),
    ("Liesel Fane", "She", "novelist", "Marrowgate", 1918),
    ("Teodor Brun", "He", "novelist", "Ulmsfeld", 1905),
    ("Petra Lune", "She", "inventor", "Greyharrow", 1841),
    ("Emil Draxe", "He", "engineer", "Brannock", 1852),
    ("Sofie Caldwell", "She", "inventor", "Ambervale", 1863),
    ("Leopold Varga", "He", "engineer", "Hallam Cross", 1837),
    ("Hedda Mosk", "She", "inventor", "Penlow", 1870),
    ("Arvid Kolb", "He", "engineer", "Tollow", 1858),
    ("Ines Farrow", "She", "inventor", "Quillon", 1881),
    ("Gustav Pryor", "He", "inventor", "Coralby", 1846),
    ("Oskar Feld", "He", "architect", "Nevra", 1701),
    ("Marta Quell", "She", "architect", "Tessaly", 1686),
    ("Bruno Aldane", "He", "architect", "Ashcombe", 1790),
    ("Vera Lindqvist", "She", "architect", "Oskava", 1862),
    ("Ada Virenne", "She", "painter", "Coralby", 1870),
    ("Felix Strand", "He", "painter", "Skarn", 1883),
    ("Juno Pereth", "She", "painter", "Linden Ford", 1891),
    ("Lukas Hennig", "He", "painter", "Eskerby", 1876),
    ("Anja Brell", "She", "singer", "Tollow", 1962),
    ("Rafe Dolan", "He", "guitarist", "Brisk", 1970),
    ("Mina Sorel", "She", "singer", "Cadrin", 1975),
    ("Jarek Vos", "He", "drummer", "Velmora", 1968),
    ("Tilda Moen", "She", "singer", "Harth", 1980),
    ("Conrad Pike", "He", "guitarist", "Zelmar", 1959),
    ("Elin Garve", "She", "singer", "Skarn", 1984),
    ("Bram Hollis", "He", "singer", "Vostry", 1972),
    ("Wilma Sarno", "She", "astronomer", "Oskava", 1849),
    ("Dag Tollefsen", "He", "explorer", "Port Halden", 1820),
]

# A second sentence per person. Deliberately no titles of works: the work passages name the person, so a
# bridge question about a work must retrieve the work first and the person second, as in HotPotQA.
PROFESSION_NOTES = {
    "film director": [
        "{P} began as a camera operator before directing.",
        "{P} is known for long, quiet scenes shot in natural light.",
    ],
    "novelist": [
        "{P} wrote mostly about small towns and family life.",
        "{P} also worked for many years as a schoolteacher.",
    ],
    "poet": ["{P} wrote short poems about nature and memory."],
    "inventor": ["{P} held more than twenty patents.", "{P} worked alone in a small home workshop."],
    "engineer": ["{P} trained as a blacksmith before becoming an engineer."],
    "architect": ["{P} favoured pale stone and tall arched windows."],
    "painter": ["{P} painted mostly in oils and in plain daylight."],
    "singer": ["{P} started singing in harbour bars at the age of sixteen."],
    "guitarist": ["{P} taught guitar for years before recording an album."],
    "drummer": ["{P} is known for very fast, precise drumming."],
    "astronomer": ["{P} mapped more than four hundred faint stars from a rooftop telescope."],
    "explorer": ["{P} led the first winter crossing of the Sabre Peaks in 1851."],
}

# (title, year, genre, director, synopsis)
FILMS = [
    ("The Salt Orchard", 1968, "drama", "Mirela Vasko", "It follows three sisters who run a failing farm by the sea."),
    ("Winter Ferry", 1975, "thriller", "Tomas Erlund", "A ferry captain finds a stowaway carrying a stolen map."),
    ("A House of Moths", 1983, "horror", "Ilse Marrin", "A family moves into a house where the lights never stay on."),
    ("Ashes of June", 1970, "war", "Jonah Kell", "Two brothers fight on opposite sides of a short border war."),
    ("Silver Tongues", 1992, "comedy", "Rosa Dunstan", "Two rival auctioneers are forced to share one small shop."),
    ("Wolves of Marten Pass", 1979, "adventure", "Pavel Orsk", "A mountain guide leads strangers through a blizzard."),
    ("Summer of Kites", 1988, "romance", "Edda Lintz", "A kite maker falls for a visiting schoolteacher."),
    ("Dust and Thunder", 1962, "western", "Kaspar Holm", "A retired sheriff defends a railway camp from raiders."),
    ("The Violin Thief", 1995, "mystery", "Nadia Ferro", "A detective hunts a thief who steals only old violins."),
    ("Seven Lanterns", 1972, "fantasy", "Viktor Sayle", "A boy must light seven magic lanterns before dawn."),
    ("Midnight Crossing", 1986, "crime", "Lotte Vane", "A smuggler plans one last trip across a frozen lake."),
    ("A Song for Mara", 1977, "musical", "Oren Castel", "A street singer writes a song to win back her sister."),
]

# (title, year, kind, author, synopsis)
BOOKS = [
    ("The Weaver's Winter", 1931, "novel", "Agata Pell", "It tells of a weaving family during a hard winter."),
    ("The Drowned Bell", 1918, "novel", "Hugo Stenmark", "A diver searches a sunken church for its lost bell."),
    (
        "A Map of Small Rooms",
        1947,
        "novel",
        "Clara Oddny",
        "A girl draws a map of every room in her grandmother's house.",
    ),
    ("The Shepherd's Almanac", 1925, "novel", "Ivo Rasmund", "A year in the life of an old shepherd and his dogs."),
    ("Twelve Psalms of Rain", 1950, "poetry collection", "Selma Tork", "Its poems are about rain, grief and gardens."),
    ("The Marble Saint", 1936, "novel", "Benedikt Arro", "A young carver is asked to make a statue of a living man."),
    (
        "The Borrowed Garden",
        1958,
        "novel",
        "Greta Holloway",
        "Two neighbours quarrel over a garden neither of them owns.",
    ),
    (
        "The Ferryman's Debt",
        1940,
        "novel",
        "Matthias Krone",
        "A ferryman must repay a debt to a stranger he once saved.",
    ),
    (
        "Feathers and Stones",
        1962,
        "poetry collection",
        "Yara Sollen",
        "Its poems are about birds, rivers and childhood.",
    ),
    ("The Long Tide", 1927, "novel", "Anton Weyl", "A fishing village waits for boats lost in a storm."),
    (
        "The Tanner's Daughter",
        1945,
        "novel",
        "Liesel Fane",
        "A tanner's daughter runs away to join a travelling theatre.",
    ),
    ("The Clockwork Heir", 1933, "novel", "Teodor Brun", "A rich old man leaves his fortune to a mechanical doll."),
]

# (name, genre, formed in, year, founder)
BANDS = [
    ("The Marsh Gulls", "folk", "Penlow", 1988, "Anja Brell"),
    ("Iron Meadow", "rock", "Brannock", 1994, "Rafe Dolan"),
    ("The Velvet Thaw", "jazz", "Quillon", 1999, "Mina Sorel"),
    ("Northbound Foxes", "punk", "Greyharrow", 1990, "Jarek Vos"),
    ("The Quiet Hours", "pop", "Dunmere", 2003, "Tilda Moen"),
    ("The Rust Pilots", "blues", "Marrowgate", 1981, "Conrad Pike"),
    ("Ember Lane", "electronic", "Oskava", 2008, "Elin Garve"),
    ("The Drifting Bells", "country", "Linden Ford", 1997, "Bram Hollis"),
]

# (name, what it is, inventor, year, effect)
INVENTIONS = [
    ("Harrow loom", "weaving machine", "Petra Lune", 1874, "It doubled the speed of wool weaving."),
    ("Iron Lark", "steam hammer", "Emil Draxe", 1889, "It could forge a ship's anchor in a single afternoon."),
    ("Quiet escapement", "clock mechanism", "Sofie Caldwell", 1895, "It made pocket watches almost silent."),
    (
        "Gull coupling",
        "railway coupling",
        "Leopold Varga",
        1866,
        "It let workers join wagons without stepping between them.",
    ),
    ("Folding press", "paper press", "Hedda Mosk", 1902, "It pressed and folded sheets of paper in one motion."),
    ("Deepwell pump", "mine pump", "Arvid Kolb", 1884, "It kept deep mine shafts free of water."),
    ("Rotary type press", "printing machine", "Ines Farrow", 1910, "It printed a thousand newspaper pages an hour."),
    ("Tidelamp", "diving lamp", "Gustav Pryor", 1879, "It let divers work on the sea floor at night."),
]

# (name, what it is, town, architect, year completed)
LANDMARKS = [
    ("Kingfisher Bridge", "stone bridge", "Ambervale", "Oskar Feld", 1752),
    ("Cathedral of Saint Oda", "cathedral", "Greyharrow", "Marta Quell", 1719),
    ("Glass Hall", "exhibition hall", "Velmora", "Vera Lindqvist", 1901),
    ("Heron Tower", "clock tower", "Brisk", "Vera Lindqvist", 1899),
    ("Red Market Hall", "covered market", "Zelmar", "Bruno Aldane", 1834),
    ("Swan Opera House", "opera house", "Tessaly", "Marta Quell", 1725),
    ("Harbour Watch Tower", "watch tower", "Port Halden", "Bruno Aldane", 1828),
    ("Owl Library", "library", "Nevra", "Oskar Feld", 1744),
]

# (title, painter, year, subject)
PAINTINGS = [
    ("The Blue Harbour", "Ada Virenne", 1902, "fishing boats at dusk"),
    ("The Red Kite", "Felix Strand", 1908, "a bird of prey above a ploughed field"),
    ("Women of the Mill", "Juno Pereth", 1920, "mill workers on their lunch break"),
    ("Herring Boats", "Lukas Hennig", 1905, "a fleet leaving port in the rain"),
    ("Haystacks at Noon", "Ada Virenne", 1911, "haystacks under a white summer sky"),
    ("Lamplight", "Juno Pereth", 1930, "a woman reading by an oil lamp"),
]


# --------------------------------------------------------------------------------------------------------------
# Passages
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Passage:
    title: str
    type: str
    text: str


def river_title(river: str) -> str:
    return f"{river} River"


def _person_is(year: int) -> str:
    """Tense for a person sentence: people born long ago 'were', everyone else 'is'."""
    return "was" if year < 1900 else "is"


def _person_note(name: str, pronoun: str, profession: str) -> str:
    """A neutral second sentence, varied between people of the same profession by their order in PEOPLE."""
    same = [p[0] for p in PEOPLE if p[2] == profession]
    notes = PROFESSION_NOTES[profession]
    return notes[same.index(name) % len(notes)].format(P=pronoun)


def build_passages() -> list[Passage]:
    """All passages of the world, in a fixed order (provinces, towns, rivers, ..., paintings)."""
    out: list[Passage] = []
    for name, desc, capital in PROVINCES:
        out.append(Passage(name, "province", f"{name} is {desc}. Its capital is {capital}."))
    for name, kind, province, year, known, river in TOWNS:
        where = f"on the {river_title(river)} " if river else ""
        text = (
            f"{name} is a {kind} {where}in the province of {province}, founded in {year}. It is known for its {known}."
        )
        out.append(Passage(name, "town", text))
    for name, _where, desc in SOURCES:
        out.append(Passage(name, "mountain", desc))
    for name, desc in SEAS:
        out.append(Passage(name, "sea", desc))
    source_where = {s[0]: s[1] for s in SOURCES}
    for name, source, length, sea in RIVERS:
        text = f"The {river_title(name)} rises {source_where[source]} and flows {length} kilometres into the {sea}."
        out.append(Passage(river_title(name), "river", text))
    for name, pronoun, profession, town, year in PEOPLE:
        article = "an" if profession[0] in "aeiou" else "a"
        text = f"{name} (born {year}) {_person_is(year)} {article} {profession} from {town}. "
        out.append(Passage(name, "person", text + _person_note(name, pronoun, profession)))
    for title, year, genre, director, synopsis in FILMS:
        text = f"{title} is a {year} {genre} film directed by {director}. {synopsis}"
        out.append(Passage(title, "film", text))
    for title, year, kind, author, synopsis in BOOKS:
        out.append(Passage(title, "book", f"{title} is a {year} {kind} by {author}. {synopsis}"))
    for name, genre, town, year, founder in BANDS:
        role = person_of(founder)[2]
        text = f"{name} are a {genre} band formed in {town} in {year}. The band was founded by the {role} {founder}."
        out.append(Passage(name, "band", text))
    for name, what, inventor, year, effect in INVENTIONS:
        out.append(Passage(name, "invention", f"The {name} is a {what} invented by {inventor} in {year}. {effect}"))
    for name, what, town, architect, year in LANDMARKS:
        text = f"The {name} is a {what} in {town}, designed by the architect {architect} and completed in {year}."
        out.append(Passage(name, "landmark", text))
    for title, painter, year, subject in PAINTINGS:
        text = f"{title} is an oil painting by {painter}, finished in {year}. It shows {subject}."
        out.append(Passage(title, "painting", text))
    return out


def person_of(name: str) -> tuple[str, str, str, str, int]:
    return next(p for p in PEOPLE if p[0] == name)


def town_of(name: str) -> tuple[str, str, str, int, str, str | None]:
    return next(t for t in TOWNS if t[0] == name)


def river_of(name: str) -> tuple[str, str, int, str]:
    return next(r for r in RIVERS if r[0] == name)


def answer_values() -> dict[str, list[str]]:
    """Every value of each answer type in the world, so a quiz's distractors can be checked for plausibility."""
    years = {t[3] for t in TOWNS} | {p[4] for p in PEOPLE} | {f[1] for f in FILMS} | {b[1] for b in BOOKS}
    years |= {b[3] for b in BANDS} | {i[3] for i in INVENTIONS} | {lm[4] for lm in LANDMARKS}
    years |= {p[2] for p in PAINTINGS}
    return {
        "person": [p[0] for p in PEOPLE],
        "town": [t[0] for t in TOWNS],
        "province": [p[0] for p in PROVINCES],
        "river": [river_title(r[0]) for r in RIVERS],
        "sea": [s[0] for s in SEAS],
        "year": [str(y) for y in sorted(years)],
        "profession": sorted({p[2] for p in PEOPLE}),
        "genre": sorted({f[2] for f in FILMS} | {b[1] for b in BANDS}),
    }
