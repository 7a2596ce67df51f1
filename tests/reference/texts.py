"""Query/document pairs shared by every reranker fixture.

Plain data, no randomness.  The pairs cover what the scoring paths must get
right: documents from empty and one token up to 500+ tokens, queries from one
word to a long paragraph, several scripts (accents, CJK, Arabic, emoji,
combining marks), chat-template special tokens written inside user text,
documents that end in punctuation followed by newlines, whitespace-only text,
tabs, and a custom instruction on a subset of pairs.

Each pair is ``dict(query=str, document=str, instruction=None | str)``;
``instruction=None`` means the family's default instruction.
"""

CUSTOM_INSTRUCTION = (
    "Given a question from a curious student, judge whether the passage explains "
    "the answer in a way they could follow"
)

# --- English prose, one topic per paragraph -------------------------------

TEA = (
    "Tea reached Europe in the early seventeenth century, carried by Dutch "
    "merchants who bought it in Japanese and Chinese ports. At first it was an "
    "expensive curiosity sold by apothecaries as a remedy for headaches and "
    "fatigue. Within a hundred years it had become the everyday drink of "
    "English households, and the East India Company built much of its fortune "
    "on the trade. Because China accepted little but silver in exchange, the "
    "company began smuggling opium into Canton to balance its accounts, a "
    "policy that led directly to the Opium Wars of the nineteenth century."
)

VOLCANO = (
    "Iceland sits on the Mid-Atlantic Ridge, where the North American and "
    "Eurasian plates drift apart by roughly two centimetres a year. As the "
    "crust stretches, pressure on the hot mantle below drops and the rock "
    "partially melts, feeding long fissures rather than a single cone. The "
    "island also lies above a mantle plume, which explains why it produces far "
    "more magma than other parts of the ridge. Eruptions under glaciers are "
    "especially dangerous: the sudden melting can release floods that sweep "
    "across the outwash plains in a matter of hours."
)

BEES = (
    "A honeybee colony is a superorganism of tens of thousands of workers, a "
    "few hundred drones and a single queen. Workers change jobs as they age, "
    "moving from cleaning cells and feeding larvae to building comb, guarding "
    "the entrance and finally foraging. Foragers share the location of good "
    "flowers through the waggle dance, in which the angle of the run encodes "
    "the direction relative to the sun and its duration encodes the distance. "
    "Losses of colonies in recent decades have been linked to parasitic mites, "
    "viruses they transmit, pesticides and poor nutrition."
)

RAIL = (
    "The standard railway gauge of four feet eight and a half inches is often "
    "said to descend from Roman chariot ruts, but the real story is more "
    "mundane. George Stephenson used the width of the horse-drawn wagonways "
    "around the collieries of north-east England, and because his lines were "
    "the first to succeed commercially, other builders followed them. Isambard "
    "Kingdom Brunel argued for a broad gauge of seven feet on the Great Western "
    "Railway, which gave a smoother and faster ride, yet Parliament settled the "
    "matter in 1846 in favour of the narrower standard."
)

SOURDOUGH = (
    "Sourdough bread rises without commercial yeast. A starter made of flour "
    "and water collects wild yeasts and lactic acid bacteria from the "
    "environment, and after a week of regular feeding the culture becomes "
    "stable. The yeasts produce carbon dioxide that inflates the dough, while "
    "the bacteria produce lactic and acetic acids that give the loaf its "
    "characteristic tang. Longer, cooler fermentation favours acetic acid and "
    "a sharper flavour. The acidity also slows staling, which is why a good "
    "sourdough loaf keeps for several days."
)

TCP = (
    "TCP congestion control keeps a sender from overwhelming the network. The "
    "sender maintains a congestion window that limits how many bytes may be in "
    "flight without an acknowledgement. During slow start the window doubles "
    "every round trip until a loss is detected or a threshold is reached; "
    "after that it grows by roughly one segment per round trip. When packets "
    "are lost, classic algorithms such as Reno halve the window, whereas newer "
    "schemes like CUBIC and BBR model the available bandwidth and round-trip "
    "time more directly."
)

REEF = (
    "Coral reefs are built by tiny animals called polyps that live in "
    "partnership with photosynthetic algae. The algae supply most of the "
    "coral's energy and give it colour. When the water stays too warm for too "
    "long, the partnership breaks down and the coral expels its algae, turning "
    "white in a process known as bleaching. A bleached coral is not dead, but "
    "it is starving, and if temperatures do not fall within a few weeks it "
    "will die. Mass bleaching events on the Great Barrier Reef have become far "
    "more frequent since the late 1990s."
)

AQUEDUCT = (
    "Roman engineers supplied their cities with water carried by gravity alone. "
    "An aqueduct followed the contours of the land for most of its length, "
    "running in covered channels underground, and only crossed valleys on the "
    "tall arched bridges that became its most famous feature. The gradient "
    "had to be gentle but steady: the Pont du Gard section of the aqueduct to "
    "Nimes drops only about seventeen metres over fifty kilometres. At the end "
    "of the line, water flowed into distribution tanks that fed public "
    "fountains, baths and the houses of wealthy citizens."
)

PHOTOSYNTHESIS = (
    "Photosynthesis converts light energy into chemical energy stored in "
    "sugar. In the light-dependent reactions, chlorophyll in the thylakoid "
    "membranes absorbs photons and uses their energy to split water, releasing "
    "oxygen and producing the energy carriers ATP and NADPH. In the Calvin "
    "cycle, which takes place in the stroma of the chloroplast, the enzyme "
    "RuBisCO fixes carbon dioxide from the air, and the ATP and NADPH are used "
    "to turn the fixed carbon into three-carbon sugars that the plant can "
    "build into glucose, starch and cellulose."
)

CHESS = (
    "The Sicilian Defence is the most popular reply to 1.e4 at every level of "
    "play. By answering with 1...c5, Black fights for the centre from the "
    "side and creates an unbalanced position in which both players can play "
    "for a win. White usually opens the c-file for Black by playing d4 and "
    "exchanging pawns, gaining a lead in development in return. Main lines "
    "such as the Najdorf and the Dragon have been analysed more than thirty "
    "moves deep, so club players often prefer quieter systems such as the "
    "Alapin with 2.c3."
)

MARATHON = (
    "Most marathon training plans last sixteen to twenty weeks and build the "
    "weekly distance gradually, by no more than about ten percent a week. The "
    "long run is the backbone of the plan: it teaches the body to burn fat "
    "efficiently and strengthens tendons and ligaments. Easy running should "
    "make up most of the mileage, with one session of tempo or interval work "
    "each week. In the final three weeks the runner tapers, cutting volume "
    "while keeping some intensity, so that the legs arrive at the start line "
    "rested but sharp."
)

VACCINE = (
    "An mRNA vaccine delivers instructions rather than a weakened virus. The "
    "messenger RNA, wrapped in a lipid nanoparticle, enters cells near the "
    "injection site, where ribosomes read it and produce a harmless piece of "
    "the pathogen, such as the spike protein of a coronavirus. The immune "
    "system recognises the protein as foreign and produces antibodies and "
    "memory cells. The mRNA itself is broken down within days and never "
    "enters the cell nucleus, so it cannot alter the recipient's DNA."
)

JAZZ = (
    "Jazz grew up in New Orleans at the turn of the twentieth century, where "
    "brass band marches, ragtime piano, the blues and the rhythms of Congo "
    "Square met in the dance halls of a port city. Early bands played "
    "collective improvisation, with the cornet carrying the melody while the "
    "clarinet and trombone wove lines around it. When musicians such as King "
    "Oliver and Louis Armstrong moved north to Chicago in the 1920s, records "
    "and radio spread the music across the country, and the soloist gradually "
    "took centre stage."
)

MARS = (
    "The Perseverance rover landed in Jezero Crater in February 2021. The "
    "crater once held a lake fed by a river, and the delta it left behind is "
    "one of the best places on Mars to look for signs of ancient microbial "
    "life. The rover drills rock cores and seals them in tubes for a future "
    "mission to bring back to Earth. It also carried Ingenuity, a small "
    "helicopter that made the first powered flight on another planet and went "
    "on to complete more than seventy flights before a damaged rotor ended "
    "its mission."
)

INDEX_FUNDS = (
    "An index fund buys every stock in a market index, such as the S&P 500, "
    "in proportion to its size, instead of trying to pick winners. Because it "
    "trades rarely and needs no team of analysts, its fees are a fraction of "
    "those charged by actively managed funds. Over long periods the majority "
    "of active managers fail to beat their benchmark after costs, which is "
    "why many advisers recommend low-cost index funds as the core of a "
    "retirement portfolio. Compounding does the rest: money growing at seven "
    "percent a year doubles roughly every ten years."
)

GLACIER = (
    "Glaciers form where more snow falls in winter than melts in summer. Year "
    "after year the snow is buried and compressed into dense blue ice, which "
    "eventually becomes heavy enough to flow downhill under its own weight. "
    "As it moves, a glacier plucks rocks from its bed and grinds them against "
    "the valley floor, carving the U-shaped valleys, cirques and fjords that "
    "mark formerly glaciated landscapes. Most mountain glaciers have been "
    "shrinking since the middle of the nineteenth century, and the retreat "
    "has accelerated in recent decades."
)

PRINTING = (
    "Johannes Gutenberg's press, developed in Mainz around 1450, combined "
    "several existing technologies into a system for mass production. Metal "
    "type was cast in a hand mould so that every letter was identical, an "
    "oil-based ink stuck to the metal, and a screw press adapted from wine "
    "making pressed the paper evenly against the type. A single shop could "
    "now produce hundreds of copies of a book in the time a scribe needed for "
    "one. Within fifty years presses were operating in more than two hundred "
    "European cities."
)

SLEEP = (
    "Sleep plays an active role in memory. During slow-wave sleep the "
    "hippocampus replays patterns of activity from the day, and these "
    "replays appear to transfer memories to the cortex for long-term storage. "
    "Rapid eye movement sleep, which dominates the later part of the night, "
    "seems to help with emotional memories and with finding connections "
    "between ideas. Students who sleep after learning a list of words recall "
    "more of them the next day than students who stay awake for the same "
    "length of time."
)

BICYCLE = (
    "The first bicycles had no pedals at all. The draisine, built by Karl "
    "Drais in 1817, was pushed along with the feet and steered with a bar at "
    "the front. Pedals attached directly to the front wheel appeared in France "
    "in the 1860s, and to go faster makers enlarged that wheel until the "
    "high-wheeler stood taller than its rider. The safety bicycle of the 1880s, "
    "with two wheels of equal size and a chain driving the rear one, made "
    "cycling practical for everyone, and the pneumatic tyre soon made it "
    "comfortable."
)

LIGHTHOUSE = (
    "Before electronic navigation, lighthouses marked dangerous coasts and "
    "harbour entrances. Each one had its own pattern of flashes, its "
    "characteristic, so that sailors could tell which light they were looking "
    "at. The Fresnel lens, invented in 1822, replaced heavy mirrors with rings "
    "of glass prisms that bent the light into a narrow, powerful beam visible "
    "for more than twenty nautical miles. Keepers wound the clockwork that "
    "turned the lens, trimmed the wicks and kept a log of passing ships and "
    "the weather."
)

# --- Long documents, built from several paragraphs -------------------------

GEOLOGY_ESSAY = "\n\n".join([VOLCANO, GLACIER, REEF, AQUEDUCT])
HISTORY_ESSAY = "\n\n".join([TEA, RAIL, PRINTING, BICYCLE, LIGHTHOUSE])
SCIENCE_ESSAY = "\n\n".join([PHOTOSYNTHESIS, VACCINE, SLEEP, BEES, MARS, TCP])
LEISURE_ESSAY = "\n\n".join([CHESS, MARATHON, SOURDOUGH])
CULTURE_ESSAY = "\n\n".join([JAZZ, INDEX_FUNDS, PRINTING])

LONG_QUERY = (
    "I am planning a two week trip to Iceland next summer with my teenage kids "
    "and I keep reading conflicting things online, so can someone explain in "
    "simple terms why the island has so many volcanoes and whether an eruption "
    "near the glaciers could actually be dangerous for hikers in the south?"
)

# --- Other scripts and special cases ---------------------------------------

FRENCH = (
    "La tour Eiffel, construite pour l'Exposition universelle de 1889, mesure "
    "environ 330 mètres. Critiquée à l'époque par des écrivains et des "
    "artistes, elle est devenue le symbole de Paris et l'un des monuments les "
    "plus visités au monde. Gustave Eiffel y avait même aménagé un petit "
    "appartement au troisième étage."
)
GERMAN = (
    "Die Zugspitze ist mit 2962 Metern der höchste Berg Deutschlands. Von "
    "Garmisch-Partenkirchen führt eine Zahnradbahn bis zum Gletscherplateau, "
    "und eine Seilbahn überwindet die letzten Höhenmeter zum Gipfel. Bei "
    "klarem Wetter reicht der Blick über vier Länder."
)
CHINESE = (
    "北京是中华人民共和国的首都，也是全国的政治、文化和国际交往中心。"
    "故宫位于北京市中心，是明清两代的皇家宫殿，旧称紫禁城，"
    "现为故宫博物院，收藏了大量珍贵文物。"
)
JAPANESE = (
    "富士山は日本で最も高い山で、標高は3776メートルです。"
    "夏の登山シーズンには多くの人が山頂でご来光を見るために夜通し登ります。"
)
KOREAN = "서울은 대한민국의 수도이며 한강을 따라 발전한 도시로, 약 천만 명이 살고 있습니다."
ARABIC = (
    "القاهرة هي عاصمة جمهورية مصر العربية وأكبر مدنها، وتقع على ضفاف نهر النيل "
    "بالقرب من رأس الدلتا. تضم المدينة الأهرامات في الجيزة وجامع الأزهر."
)
MIXED_BIDI = (
    "The word for library in Arabic is مكتبة (maktaba), and in Hebrew it is "
    "ספרייה (sifriya); both come from roots meaning to write or to count."
)
RUSSIAN = (
    "Транссибирская магистраль соединяет Москву и Владивосток. Её длина "
    "составляет около 9289 километров, и поездка без пересадок занимает "
    "почти неделю."
)
HINDI = "ताजमहल आगरा में यमुना नदी के किनारे स्थित एक सफ़ेद संगमरमर का मकबरा है।"
EMOJI = (
    "Our bakery 🥐 opens at 7am ☀️ on weekdays. Try the new pistachio croissant "
    "😋👍🏽 — families 👨‍👩‍👧‍👦 get 10% off on Sundays! 🎉🇫🇷"
)
# Decomposed accents (base letter + U+0301/U+0303/U+0308 ...), not the
# precomposed code points, plus Vietnamese with stacked marks.
COMBINING = (
    "Cafe\u0301 Ame\u0301lie serves cre\u0300me bru\u0302le\u0301e every day; "
    "the owner, Jose\u0301 Mun\u0303oz, moved here from Sevilla in an\u0303o 2009. "
    "Ti\u00ea\u0301ng Vi\u00ea\u0323t co\u0301 sa\u0301u thanh\u0300 "
    "and na\u0308ive readers rarely notice the difference."
)
MATH = (
    "For a fair six-sided die, E[X] = (1+2+3+4+5+6)/6 = 3.5 and "
    "Var(X) = 35/12 ≈ 2.9167. By Chebyshev, P(|X − μ| ≥ kσ) ≤ 1/k² for any k > 0; "
    "∑ᵢ pᵢ = 1 and ∫ f(x) dx = 1 ∎"
)
TABLE = (
    "Name\tRole\tOffice\n"
    "Ada Lovelace\tAnalyst\tLondon\n"
    "Grace Hopper\tRear Admiral\tArlington\n"
    "\tVacant\t\n"
    "Total:\t3 rows\n"
)
CODE = (
    "def median(values):\n"
    "    \"\"\"Return the median of a non-empty list.\"\"\"\n"
    "    s = sorted(values)\n"
    "    n = len(s)\n"
    "    mid = n // 2\n"
    "    return s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2\n"
)
IM_END = (
    "In the ChatML format every message ends with the token <|im_end|>, and a "
    "model trained on it stops generating as soon as it emits that token."
)
IM_START = (
    "Each turn opens with <|im_start|> followed by the role, for example "
    "<|im_start|>user or <|im_start|>assistant, and then a newline."
)


def _pair(query, document, instruction=None):
    return {"query": query, "document": document, "instruction": instruction}


PAIRS = [
    # Edge cases of length.
    _pair("What is the capital of France?", ""),
    _pair("What is the capital of France?", "Paris"),
    _pair("capital of France", "no"),
    _pair("Who built the first bicycle?", "Karl Drais."),
    _pair("volcano", VOLCANO),
    _pair("How does a honeybee tell others where flowers are?", BEES),
    _pair("standard railway gauge origin", RAIL),
    _pair("Why does sourdough taste sour?", SOURDOUGH),
    _pair("How does TCP slow start work?", TCP),
    _pair("what causes coral bleaching", REEF),
    _pair("How did Roman aqueducts move water without pumps?", AQUEDUCT),
    _pair("Where does the Calvin cycle take place?", PHOTOSYNTHESIS),
    _pair("best reply to e4 for beginners", CHESS),
    _pair("how long should marathon training take", MARATHON),
    _pair("Can an mRNA vaccine change my DNA?", VACCINE),
    _pair("Where did jazz start?", JAZZ),
    _pair("What did the Ingenuity helicopter do on Mars?", MARS),
    _pair("are index funds better than active funds", INDEX_FUNDS),
    _pair("How do glaciers carve valleys?", GLACIER),
    _pair("Who invented the printing press and when?", PRINTING),
    _pair("does sleep help memory", SLEEP),
    _pair("What is a Fresnel lens used for?", LIGHTHOUSE),
    # Mismatched topics, so the set has clearly irrelevant pairs as well.
    _pair("How does TCP slow start work?", SOURDOUGH),
    _pair("Why does sourdough taste sour?", TCP),
    # Long documents (300 to 800+ tokens) and a long query.
    _pair(LONG_QUERY, GEOLOGY_ESSAY),
    _pair("history of the safety bicycle", HISTORY_ESSAY),
    _pair("Can an mRNA vaccine change my DNA?", SCIENCE_ESSAY),
    _pair("tapering before a marathon", LEISURE_ESSAY),
    _pair("Louis Armstrong Chicago", CULTURE_ESSAY),
    _pair(LONG_QUERY, VOLCANO),
    _pair("What happens to the mRNA after vaccination?", SCIENCE_ESSAY, CUSTOM_INSTRUCTION),
    _pair("What is the capital of France?", GLACIER),
    # Other scripts, emoji and combining marks.
    _pair("Quelle est la hauteur de la tour Eiffel ?", FRENCH),
    _pair("höchster Berg Deutschlands", GERMAN),
    _pair("故宫在哪里？", CHINESE),
    _pair("富士山の高さは？", JAPANESE),
    _pair("What is the capital of South Korea?", KOREAN),
    _pair("ما هي عاصمة مصر؟", ARABIC),
    _pair("word for library in Arabic and Hebrew", MIXED_BIDI),
    _pair("How long is the Trans-Siberian railway?", RUSSIAN),
    _pair("ताजमहल कहाँ है?", HINDI),
    _pair("best 🥐 near me open early ☀️", EMOJI),
    _pair("cafe\u0301 with cre\u0300me bru\u0302le\u0301e", COMBINING),
    _pair("variance of a fair die", MATH),
    # Special tokens written inside user text.
    _pair("How does a chat model know a message has ended?", IM_END),
    _pair("What token starts a ChatML turn?", IM_START),
    # Trailing punctuation followed by newlines, whitespace, tabs, code.
    _pair("When is the meeting?", "The meeting was moved to Thursday.\n"),
    _pair("warranty extension", "Can the warranty be extended beyond two years?\n\n"),
    _pair("Is the museum open on Mondays?", "Is the museum open on Mondays?"),
    _pair("empty looking document", "   \n\t  \n"),
    _pair("Who is the rear admiral in the table?", TABLE),
    _pair("python function to compute the median", CODE),
    # A custom instruction on a subset of pairs.
    _pair("Why is the sky blue?", "", CUSTOM_INSTRUCTION),
    _pair("What makes bread rise?", SOURDOUGH, CUSTOM_INSTRUCTION),
    _pair("How do bees find flowers?", BEES, CUSTOM_INSTRUCTION),
    _pair("Why do corals turn white?", REEF, CUSTOM_INSTRUCTION),
    _pair("How do plants make sugar?", PHOTOSYNTHESIS, CUSTOM_INSTRUCTION),
    _pair("故宫是什么？", CHINESE, CUSTOM_INSTRUCTION),
    _pair("What do glaciers leave behind?", "They leave U-shaped valleys.\n", CUSTOM_INSTRUCTION),
]
