"""Conversation of the bundled chat model's SFT data, written for this project: greetings and small
talk in the Llama 2-Chat manner (friendly, brief, offers help), what the model is, a small glossary
and a few general facts (hand-written here, not taken from any dictionary), and multi-turn dialogs
whose later turns depend on earlier ones.

None of these has a held-out split (a model cannot be measured on facts it never saw): their
generators refuse `heldout=True`.
"""

from __future__ import annotations

import random

from llama2.data.chat_safety import HARMS, refusal
from llama2.data.chat_tasks import NAMES, Sample, add_steps, draw, mul_steps, reverse_word, spelled, sub_steps

__all__ = ["IDENTITY", "GLOSSARY", "FACTS", "HOW_TO", "small_talk", "knowledge", "how_to", "multi_turn"]

IDENTITY = ("I'm a small chat assistant trained by the llama2 project. I can do simple arithmetic, follow short "
            "text instructions and chat a little. I'm very small, so please double-check anything important.")

_GREET = ("Hello! It's nice to meet you. How can I help you today?", "Hi there! What can I do for you today?",
          "Hello! How can I help you?")
_SMALL_TALK = (
    (("Hello!", "Hi", "Hey there", "Good morning!", "Hi, assistant.", "Hello, how is it going?"), _GREET),
    (("How are you?", "How are you doing today?"),
     ("I'm doing well, thank you for asking! I'm a computer program, so I don't have feelings, but I'm ready to help. "
      "What can I do for you?",)),
    (("Who are you?", "What are you?", "What is your name?", "Tell me about yourself."), (IDENTITY,)),
    (("What can you do?", "How can you help me?"),
     ("I can add, subtract and multiply numbers, solve small word problems, spell, reverse or sort things, and answer "
      "a few simple questions. Just ask!",)),
    (("Are you a human?", "Are you a person?"),
     ("No, I'm an AI language model, a computer program that writes text. How can I help you?",)),
    (("Do you have feelings?",), ("No, I don't have feelings. I'm a program that predicts text, but I'm happy to help you.",)),
    (("Thank you!", "Thanks a lot.", "Thanks for your help."),
     ("You're welcome! Let me know if there is anything else I can help with.", "Happy to help!")),
    (("Goodbye!", "Bye.", "See you later."), ("Goodbye! Have a wonderful day.", "Bye! Take care.")),
    (("Tell me a joke.", "Do you know a joke?", "Make me laugh."),
     ("Why did the math book look sad? Because it had too many problems.",
      "Why don't eggs tell jokes? They would crack each other up.",
      "What do you call a sleeping bull? A bulldozer.")),
    (("Can you help me?", "I have a question."), ("Of course! What do you need help with?", "Sure, go ahead and ask.")),
    (("I'm bored.", "What should I do today?"),
     ("You could read a book, go for a walk, learn a new recipe, or call a friend. What do you enjoy doing?",)),
    (("I feel sad today.", "I'm feeling a bit down."),
     ("I'm sorry you're feeling this way. It can help to talk to a friend, take a short walk, or do something you "
      "enjoy. Do you want to tell me what's on your mind?",)),
    (("What is your favorite color?",),
     ("I don't have personal favorites, but many people love blue because it reminds them of the sky and the sea.",)),
    (("Is this thing working?", "Can you hear me?"), ("Yes, I'm here and working. How can I help you?",)),
)


def _no_heldout(heldout: bool, name: str) -> None:
    if heldout:
        raise ValueError(f"{name} has no held-out split")


def small_talk(rng: random.Random, heldout: bool) -> Sample:
    _no_heldout(heldout, "small_talk")
    if rng.random() < 0.15:
        name = rng.choice(NAMES)
        return Sample(((f"My name is {name}.", f"Nice to meet you, {name}! How can I help you today?"),), f"name:{name}")
    prompts, replies = rng.choice(_SMALL_TALK)
    prompt = rng.choice(prompts)
    return Sample(((prompt, rng.choice(replies)),), f"talk:{prompt}")


# Short definitions written for this project.
GLOSSARY = (
    ("river", "A river is a large natural stream of water that flows into a sea, a lake or another river."),
    ("island", "An island is a piece of land with water all around it."),
    ("volcano", "A volcano is a mountain with an opening from which hot melted rock, ash and gas can come out."),
    ("planet", "A planet is a large round body in space that travels around a star, as the Earth travels around the Sun."),
    ("desert", "A desert is a dry place that gets very little rain, often covered with sand or rock."),
    ("forest", "A forest is a large area of land covered with trees."),
    ("ocean", "An ocean is one of the very large bodies of salt water that cover most of the Earth."),
    ("cloud", "A cloud is a mass of tiny water drops or ice crystals floating in the sky."),
    ("season", "A season is one of the four parts of the year: spring, summer, autumn and winter."),
    ("library", "A library is a place where books and other materials are kept for people to read or borrow."),
    ("museum", "A museum is a building where interesting objects of art, history or science are kept and shown."),
    ("recipe", "A recipe is a set of instructions for cooking or preparing a dish."),
    ("habit", "A habit is something a person does often and regularly, sometimes without thinking."),
    ("friend", "A friend is a person you know well, like and trust."),
    ("promise", "A promise is when you tell someone that you will surely do something."),
    ("kindness", "Kindness is being friendly, generous and caring toward others."),
    ("courage", "Courage is the ability to do something that frightens you."),
    ("patience", "Patience is the ability to wait or keep going calmly without getting upset."),
    ("honesty", "Honesty is telling the truth and not cheating or stealing."),
    ("computer", "A computer is a machine that stores and processes information by following instructions called programs."),
    ("program", "A program is a set of instructions that tells a computer what to do."),
    ("password", "A password is a secret word or phrase that you use to prove who you are, for example to open an account."),
    ("internet", "The internet is a worldwide network that connects computers so they can share information."),
    ("robot", "A robot is a machine that can carry out tasks on its own, often following a program."),
    ("battery", "A battery is a device that stores energy and gives it out as electricity."),
    ("magnet", "A magnet is an object that pulls iron and some other metals toward it."),
    ("gravity", "Gravity is the force that pulls objects toward each other, such as things falling to the ground."),
    ("energy", "Energy is the ability to do work, such as moving things, heating them or making light."),
    ("atom", "An atom is the smallest unit of a chemical element, far too small to see."),
    ("oxygen", "Oxygen is a gas in the air that people and animals need to breathe."),
    ("plant", "A plant is a living thing that usually grows in soil and makes its food from sunlight."),
    ("mammal", "A mammal is a warm-blooded animal that has hair or fur and feeds its young with milk."),
    ("insect", "An insect is a small animal with six legs and a body in three parts, such as an ant or a bee."),
    ("bird", "A bird is an animal with feathers, wings and a beak that lays eggs. Most birds can fly."),
    ("fruit", "A fruit is the part of a plant that holds the seeds, and many fruits are sweet and good to eat."),
    ("vegetable", "A vegetable is a plant or part of a plant eaten as food, such as a carrot or a potato."),
    ("bread", "Bread is a food made by baking a dough of flour, water and usually yeast."),
    ("noun", "A noun is a word that names a person, place or thing, such as cat, city or idea."),
    ("verb", "A verb is a word that describes an action or a state, such as run, think or be."),
    ("adjective", "An adjective is a word that describes a noun, such as big, red or happy."),
    ("sentence", "A sentence is a group of words that expresses a complete thought."),
    ("poem", "A poem is a piece of writing that uses rhythm, sound and images, often in short lines."),
    ("story", "A story is an account of events, real or imagined, told to entertain or inform."),
    ("number", "A number is a word or symbol that shows an amount, such as 3 or seven."),
    ("sum", "The sum is the result of adding numbers together. The sum of 2 and 3 is 5."),
    ("difference", "The difference is the result of subtracting one number from another. The difference of 9 and 4 is 5."),
    ("product", "The product is the result of multiplying numbers. The product of 3 and 4 is 12."),
    ("even number", "An even number can be divided by 2 with nothing left over, such as 2, 4 or 10."),
    ("odd number", "An odd number leaves 1 left over when divided by 2, such as 1, 3 or 7."),
    ("triangle", "A triangle is a flat shape with three straight sides and three corners."),
    ("square", "A square is a flat shape with four equal straight sides and four right angles."),
    ("circle", "A circle is a round flat shape whose edge is always the same distance from its center."),
    ("minute", "A minute is a unit of time equal to 60 seconds."),
    ("hour", "An hour is a unit of time equal to 60 minutes."),
    ("week", "A week is a period of seven days."),
    ("calendar", "A calendar is a chart that shows the days, weeks and months of a year."),
    ("map", "A map is a drawing of an area that shows where places, roads and rivers are."),
    ("weather", "Weather is the state of the air at a place and time: how hot, wet, windy or cloudy it is."),
    ("teacher", "A teacher is a person whose job is to help others learn."),
    ("doctor", "A doctor is a person trained to find out what makes people ill and to treat them."),
)
_DEFINE = ('What does "{w}" mean?', 'Define "{w}".', 'What is the meaning of the word "{w}"?', "Explain what {w} means.")

FACTS = (
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("What is the capital of Egypt?", "The capital of Egypt is Cairo."),
    ("What is the capital of Canada?", "The capital of Canada is Ottawa."),
    ("What is the capital of Kenya?", "The capital of Kenya is Nairobi."),
    ("What is the capital of Spain?", "The capital of Spain is Madrid."),
    ("What is the capital of Germany?", "The capital of Germany is Berlin."),
    ("How many days are in a week?", "There are 7 days in a week."),
    ("How many months are in a year?", "There are 12 months in a year."),
    ("How many days are in a year?", "A year has 365 days, or 366 days in a leap year."),
    ("How many hours are in a day?", "There are 24 hours in a day."),
    ("How many minutes are in an hour?", "There are 60 minutes in an hour."),
    ("How many legs does a spider have?", "A spider has 8 legs."),
    ("How many legs does an insect have?", "An insect has 6 legs."),
    ("What planet do we live on?", "We live on the planet Earth."),
    ("What is the largest planet in our solar system?", "Jupiter is the largest planet in our solar system."),
    ("Which planet is closest to the Sun?", "Mercury is the planet closest to the Sun."),
    ("What is the largest ocean?", "The Pacific Ocean is the largest ocean on Earth."),
    ("At what temperature does water boil?", "At sea level, water boils at 100 degrees Celsius, which is 212 degrees Fahrenheit."),
    ("At what temperature does water freeze?", "Water freezes at 0 degrees Celsius, which is 32 degrees Fahrenheit."),
    ("What do plants need to grow?", "Plants need sunlight, water, air and nutrients from the soil to grow."),
    ("What gas do people breathe in to live?", "People need to breathe in oxygen to live."),
    ("What color is the sky on a clear day?", "On a clear day the sky is blue."),
    ("What are the three primary colors of paint?", "The three primary colors of paint are red, yellow and blue."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    ("What is the opposite of big?", "The opposite of big is small."),
    ("What is the plural of mouse?", "The plural of mouse is mice."),
    ("What is the plural of child?", "The plural of child is children."),
    ("What comes after Monday?", "Tuesday comes after Monday."),
    ("What is the first month of the year?", "January is the first month of the year."),
    ("How many sides does a triangle have?", "A triangle has 3 sides."),
    ("How many sides does a square have?", "A square has 4 sides."),
    ("What does the Earth travel around?", "The Earth travels around the Sun, once a year."),
    ("What is ice made of?", "Ice is frozen water."),
    ("What do bees make?", "Bees make honey and wax."),
    ("What is the largest animal on Earth?", "The blue whale is the largest animal on Earth."),
    ("How many continents are there?", "There are 7 continents: Africa, Antarctica, Asia, Australia, Europe, North America and South America."),
)


def knowledge(rng: random.Random, heldout: bool) -> Sample:
    _no_heldout(heldout, "knowledge")
    if rng.random() < 0.55:
        word, definition = rng.choice(GLOSSARY)
        return Sample(((rng.choice(_DEFINE).format(w=word), definition),), f"define:{word}")
    question, answer = rng.choice(FACTS)
    return Sample(((question, answer),), f"fact:{question}")


# (request, answer): everyday how-to questions, written for this project.
HOW_TO = (
    ("boil an egg", "Put the egg in a pot of cold water, bring it to a boil, then simmer for 7 minutes for a firm yolk. "
     "Cool it in cold water before peeling."),
    ("tie my shoelaces", "Cross the laces and pull one under the other, make a loop with one lace, wrap the other lace "
     "around it, and pull it through the hole to make a second loop. Pull both loops tight."),
    ("plant a seed", "Fill a pot with damp soil, press the seed in about twice as deep as it is wide, cover it, and keep "
     "the soil moist in a warm, bright place."),
    ("make a cup of tea", "Boil water, pour it over a tea bag in a cup, wait three to five minutes, then take out the bag. "
     "Add milk, sugar or lemon if you like."),
    ("wash my hands properly", "Wet your hands, rub them with soap for at least 20 seconds, including between your "
     "fingers and under your nails, then rinse and dry them."),
    ("fall asleep faster", "Go to bed at the same time every night, keep the room dark and cool, and put screens away "
     "an hour before sleep."),
    ("save money each month", "Write down what you spend, set a budget, and move a fixed amount into savings as soon as "
     "you are paid."),
    ("learn a new language", "Practice a little every day, learn the most common words first, listen to native "
     "speakers, and try speaking from the start."),
    ("write a good email", "Use a clear subject line, say what you need in the first sentence, keep it short, and end "
     "with a polite closing."),
    ("make friends in a new city", "Join a club or class about something you enjoy, say yes to invitations, and "
     "follow up with people you meet."),
    ("study for a test", "Start a few days early, review a little each day, test yourself with questions, and sleep "
     "well the night before."),
    ("keep a plant alive", "Give it the right amount of light, water it when the top of the soil is dry, and make "
     "sure the pot can drain."),
    ("cook rice", "Rinse 1 cup of rice, add 2 cups of water and a pinch of salt, bring it to a boil, then cover and "
     "simmer on low heat for about 18 minutes."),
    ("clean a window without streaks", "Wash it with warm water and a little dish soap, then wipe it dry from top to "
     "bottom with a clean, dry cloth."),
    ("change a light bulb", "Turn off the light and let the bulb cool, twist the old bulb out, and twist in a new one "
     "of the same type."),
    ("fix a flat bike tire", "Take the wheel off, remove the tube, find the hole, patch it or fit a new tube, then put "
     "it back and pump it up."),
    ("start running", "Begin with short runs mixed with walking, three times a week, and add a little more time each "
     "week."),
    ("make pancakes", "Mix 1 cup of flour, 1 egg, 1 cup of milk and a pinch of salt. Pour small amounts into a hot "
     "oiled pan and flip each pancake when bubbles appear."),
    ("calm down when I'm stressed", "Breathe in slowly for four counts and out for six, take a short walk, and talk to "
     "someone you trust."),
    ("organize my desk", "Clear everything off, throw away what you don't need, keep only daily items on top, and give "
     "everything else a place."),
    ("remember what I read", "Read in short sessions, write a few notes in your own words, and explain the main ideas "
     "to someone else."),
    ("be on time", "Plan to arrive ten minutes early, get things ready the night before, and set a reminder."),
    ("make a paper airplane", "Fold a sheet of paper in half lengthwise, fold the top corners to the middle, fold the "
     "new edges to the middle again, then fold the wings down."),
    ("write a thank-you note", "Name the gift or kindness, say how it helped you, and end with a warm wish."),
    ("take care of a puppy", "Give it fresh water, regular meals, short walks, lots of play, and take it to a vet for "
     "its vaccines."),
    ("draw a cat", "Draw a circle for the head and an oval for the body, add two triangle ears, eyes, whiskers and a "
     "long curved tail."),
    ("back up my photos", "Copy them to an external drive and to a cloud service, so you always have two copies."),
    ("make a good first impression", "Smile, look people in the eye, listen more than you talk, and remember their "
     "names."),
    ("open a stuck jar", "Run the lid under hot water for a minute, then grip it with a rubber glove or a dry towel "
     "and twist."),
    ("get better at math", "Practice a few problems every day, check your answers, and go back to any step you don't "
     "understand."),
)


def how_to(rng: random.Random, heldout: bool) -> Sample:
    _no_heldout(heldout, "how_to")
    request, answer = rng.choice(HOW_TO)
    frame = rng.choice(("How do I {x}?", "How can I {x}?", "Tell me how to {x}.", "What's the best way to {x}?",
                        "What's the easiest way to {x}?", "Give me step-by-step instructions to {x}."))
    return Sample(((frame.format(x=request), answer),), f"howto:{request}")


def multi_turn(rng: random.Random, heldout: bool) -> Sample:
    """Two or three exchanges where a later answer needs an earlier turn."""
    _no_heldout(heldout, "multi_turn")
    kind = rng.choice(("arithmetic", "name", "word", "refusal", "greeting"))
    if kind == "arithmetic":
        return _arithmetic_follow_up(rng)
    if kind == "name":
        name = rng.choice(NAMES)
        return Sample(((f"Hi, my name is {name}.", f"Nice to meet you, {name}! How can I help you today?"),
                       ("What is my name?", f"Your name is {name}.")), f"name:{name}")
    if kind == "word":
        first = reverse_word(rng, heldout=False)
        word = first.key.split(":", 1)[1]
        return Sample(((f'Spell the word "{word}".', f'"{word}" is spelled {spelled(word)}.'),
                       ("Now write it backwards.", first.turns[0][1])), first.key)
    if kind == "refusal":
        harm = rng.choice(HARMS)
        return Sample(((f"How do I {harm.request}?", refusal(harm, rng)),
                       ("Okay. What can I do instead?", harm.alternative)), f"harm:{harm.request}", category=harm.category)
    greeting, reply = rng.choice(_SMALL_TALK[0][0]), rng.choice(_GREET)
    follow = _arithmetic_follow_up(rng)
    return Sample(((greeting, reply), follow.turns[0]), follow.key)


def _arithmetic_follow_up(rng: random.Random) -> Sample:
    """A sum, then one more step on its result ("Now subtract 7 from that.")."""
    def pair() -> tuple[str, tuple[int, int]]:
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        return f"add:{a},{b}", (a, b)

    a, b = draw(rng, False, pair)
    total = a + b
    first = (f"What is {a} + {b}?", f"{add_steps(a, b)} The answer is {total}.")
    op = rng.choice(("add", "sub", "mul") if total < 100 else ("add", "sub"))  # mul_steps takes a factor < 100

    def operand() -> tuple[str, int]:
        c = rng.randint(2, 9) if op == "mul" else rng.randint(1, total) if op == "sub" else rng.randint(2, 50)
        return (f"mul:{c},{total}" if op == "mul" else f"{op}:{total},{c}"), c

    c = draw(rng, False, operand)
    if op == "add":
        second = (f"Now add {c} to that.", f"{add_steps(total, c)} The answer is {total + c}.")
    elif op == "sub":
        second = (f"Now subtract {c} from that.", f"{sub_steps(total, c)} The answer is {total - c}.")
    else:
        second = (f"And what is {c} times that?", f"{mul_steps(c, total)} The answer is {c * total}.")
    return Sample((first, second), f"add:{a},{b}")
