#include "corpus.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mg_corpus {
    size_t ncubes;
    char **ids;
    size_t *sizes;
    size_t *first;      /* first preloaded memory number of each cube */
    double *cumulative; /* normalized cumulative Zipf weights */
    size_t memories;
    uint64_t seed;
};

uint64_t mg_corpus_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t mg_corpus_mix(uint64_t a, uint64_t b)
{
    uint64_t s = a ^ (b * 0xd6e8feb86659fd93ULL);
    mg_corpus_rand(&s);
    return mg_corpus_rand(&s);
}

/* ---- vocabulary ---- */

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static const char *const people[] = {
    "Maya",  "Liam",  "Sofia",  "Noah",   "Aisha",  "Mateo",    "Hana",    "Oliver",
    "Priya", "Lucas", "Chloe",  "Diego",  "Yuki",   "Ethan",    "Fatima",  "Jonas",
    "Elena", "Kwame", "Grace",  "Ravi",   "Amara",  "Felix",    "Ingrid",  "Omar",
    "Lena",  "Tomas", "Mei",    "Samuel", "Nadia",  "Arjun",    "Clara",   "Emeka",
    "Julia", "Hugo",  "Zara",   "Victor", "Leila",  "Caroline", "Melanie", "Jon",
    "Gina",  "Tim",   "Audrey", "Andrew", "Calvin", "Dave",     "Evan",    "Sam",
};
static const char *const places[] = {
    "the farmers market",
    "the climbing gym",
    "the public library",
    "the lake",
    "the community center",
    "the art museum",
    "the coffee shop on Main Street",
    "the park",
    "the beach",
    "the old bookstore",
    "the night market",
    "the yoga studio",
    "the pottery class",
    "the hospital",
    "the office",
    "the train station",
    "the botanical garden",
    "the animal shelter",
    "the music festival",
    "the bakery",
    "the hiking trail",
    "the swimming pool",
    "the soccer field",
    "the cinema",
};
static const char *const cities[] = {
    "Lisbon", "Kyoto",  "Toronto", "Nairobi", "Berlin",    "Mexico City", "Seoul",
    "Oslo",   "Lima",   "Prague",  "Sydney",  "Barcelona", "Istanbul",    "Hanoi",
    "Dublin", "Denver", "Boston",  "Chicago", "Vancouver", "Marrakesh",
};
static const char *const activities[] = {
    "went hiking",           "took a pottery class",
    "ran a half marathon",   "painted a mural",
    "volunteered",           "baked sourdough bread",
    "went camping",          "learned to surf",
    "played chess",          "went to a concert",
    "started a garden",      "went kayaking",
    "joined a book club",    "tried rock climbing",
    "watched a documentary", "went fishing",
    "fixed an old bike",     "taught a coding workshop",
    "went skiing",           "sang at a karaoke night",
};
static const char *const infinitives[] = {
    "go hiking",        "learn the guitar",     "visit an old friend",     "run a marathon",
    "start a podcast",  "adopt a dog",          "learn Spanish",           "take a cooking class",
    "paint a portrait", "plant tomatoes",       "build a treehouse",       "write a short story",
    "go scuba diving",  "try a new restaurant", "see the northern lights", "open a bakery",
};
static const char *const objects[] = {
    "camera",
    "bicycle",
    "guitar",
    "laptop",
    "watercolor set",
    "tent",
    "pair of running shoes",
    "telescope",
    "espresso machine",
    "record player",
    "journal",
    "backpack",
    "sewing machine",
    "violin",
    "kayak",
    "board game",
    "necklace",
    "sketchbook",
    "drone",
    "scarf",
};
static const char *const foods[] = {
    "ramen",     "tacos",       "pad thai", "lasagna",      "sushi",     "falafel", "dumplings",
    "paella",    "pho",         "curry",    "pancakes",     "apple pie", "kimchi",  "risotto",
    "empanadas", "jollof rice", "pierogi",  "banana bread", "shakshuka", "peanuts",
};
static const char *const pets[] = {"beagle",        "tabby cat", "parrot",   "golden retriever",
                                   "rabbit",        "hamster",   "corgi",    "turtle",
                                   "border collie", "kitten",    "goldfish", "husky"};
static const char *const pet_names[] = {"Pepper", "Luna",  "Milo",   "Biscuit", "Oscar",
                                        "Daisy",  "Rocky", "Nala",   "Mochi",   "Ziggy",
                                        "Olive",  "Bear",  "Clover", "Pixel"};
static const char *const jobs[] = {
    "nurse",     "software engineer", "teacher",       "graphic designer", "chef",
    "architect", "counselor",         "data analyst",  "pharmacist",       "photographer",
    "mechanic",  "product manager",   "social worker", "electrician",      "veterinarian",
};
static const char *const companies[] = {
    "a small startup",     "the city hospital",   "a design agency", "a public school",
    "a logistics company", "a family restaurant", "a research lab",  "a nonprofit",
    "a bank downtown",     "a game studio",
};
static const char *const topics[] = {
    "climate change",
    "their career plans",
    "adoption",
    "mental health",
    "the new job",
    "moving abroad",
    "a wedding",
    "parenting",
    "the budget",
    "the garden",
    "a road trip",
    "learning to code",
    "LGBTQ support groups",
    "a charity run",
    "the neighborhood",
    "retirement",
    "a family reunion",
    "the book they were reading",
    "volunteering",
    "photography",
};
static const char *const past_times[] = {
    "last Tuesday",      "yesterday morning", "last weekend",    "two weeks ago",
    "in March",          "last summer",       "on her birthday", "over the holidays",
    "earlier this year", "last night",        "a month ago",     "in 2022",
};
static const char *const future_times[] = {
    "next weekend", "next month", "in the spring",      "this Friday",
    "in August",    "next year",  "after the holidays", "on Sunday",
};
static const char *const adjectives[] = {
    "amazing",   "exhausting", "peaceful",      "chaotic",       "inspiring", "fun",
    "stressful", "relaxing",   "unforgettable", "disappointing", "rewarding", "surprising",
};
static const char *const feelings[] = {
    "excited", "nervous", "proud", "worried", "grateful", "hopeful", "curious", "overwhelmed",
};
static const char *const weekdays[] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                       "Friday", "Saturday", "Sunday"};
static const char *const clocks[] = {"9 am",    "10:30 am", "noon", "2 pm",
                                     "3:15 pm", "5 pm",     "7 pm", "8:30 pm"};
static const char *const books[] = {
    "\"Becoming Nicole\"",
    "\"Charlotte's Web\"",
    "\"The Alchemist\"",
    "\"Sapiens\"",
    "\"Dune\"",
    "\"Educated\"",
    "\"Circe\"",
    "\"The Hobbit\"",
    "\"Atomic Habits\"",
    "\"Pachinko\"",
};
static const char *const hobbies[] = {
    "painting",  "pottery",      "photography", "running", "knitting", "chess",
    "gardening", "birdwatching", "baking",      "cycling", "swimming", "woodworking",
};
static const char *const shops[] = {"a flea market",      "an online store", "a thrift shop",
                                    "a local craft fair", "a friend",        "the mall"};

/* Templates: %x stands for a word of one list (see expand). */
static const char *const sentences[] = {
    "%p %a at %l %w and said it was %d.",
    "%p is planning to %i with %q %u.",
    "%p bought a %o from %s %w because the old one broke.",
    "%p told %q that she has been learning %h for %r months.",
    "%p's favorite food is %f, especially the way %q cooks it.",
    "%p adopted a %e named %n %w.",
    "%p works as a %j at %m and feels %v about the new project.",
    "%p and %q talked about %t over %f %w.",
    "%p has a meeting with %q about %t on %y at %k.",
    "%p finished reading %b and recommended it to %q.",
    "%p is allergic to %f and always asks about it at restaurants.",
    "%p moved to %c %w to start a job as a %j.",
    "%p visited %c with %q %w; they loved the food there, especially the %f.",
    "%p feels %v about %t and wants to talk to %q about it.",
    "%p's %e %n got sick %w, so %p stayed home from %l.",
    "%p %a with %q %w and they want to do it again %u.",
    "%p gave %q a %o for her birthday %w.",
    "%p said the trip to %c %w was %d, and that %q got lost near %l.",
    "%p has been going to %l every %y to practice %h.",
    "%p wants to %i before turning %r0.",
    "%p met %q at %l %w; they talked for hours about %t.",
    "%p is saving money for a %o and hopes to buy it %u.",
    "%p started volunteering at %l %w and finds it %d.",
    "%p's sister lives in %c and works as a %j.",
    "%p cooked %f for %r friends %w; it turned out %d.",
    "%p ran into %q at %l %w, and they made plans to %i %u.",
    "%p keeps a %o on the desk as a reminder of the time in %c.",
    "%p signed up for a %h class at %l that starts %u.",
    "%p and %q disagree about %t, but they agreed to discuss it on %y.",
    "%p lost the %o at %l %w and was %v until %q found it.",
};

static const char *const questions[] = {
    "What did %p do at %l?",
    "When is %p going to %i?",
    "What pet does %p have?",
    "Where does %p work?",
    "What is %p's favorite food?",
    "Who did %p talk to about %t?",
    "What book did %p recommend to %q?",
    "Where did %p move?",
    "How does %p feel about %t?",
    "What did %p buy %w?",
    "When is the meeting between %p and %q?",
    "What hobby has %p been learning?",
    "Which city did %p visit with %q?",
    "What is %p allergic to?",
    "What did %p give %q for her birthday?",
    "Where does %p practice %h?",
    "What is %p saving money for?",
    "What happened to %p's %e?",
    "What does %p's sister do?",
    "What did %p and %q plan for %u?",
};

static const char *pick(uint64_t *rng, const char *const *list, size_t n)
{
    return list[mg_corpus_rand(rng) % n];
}

/* Expands a template. %p and %q are two different people, fixed for the
 * whole text; %r is a small number. */
static size_t expand(const char *tpl, uint64_t *rng, char *buf, size_t cap)
{
    size_t np = N_OF(people);
    size_t pi = mg_corpus_rand(rng) % np;
    size_t qi = (pi + 1 + mg_corpus_rand(rng) % (np - 1)) % np;
    size_t len = 0;
    if (cap == 0)
        return 0;
    for (const char *t = tpl; *t && len + 1 < cap; t++) {
        const char *word = NULL;
        char num[8];
        if (*t != '%' || t[1] == '\0') {
            buf[len++] = *t;
            continue;
        }
        switch (*++t) {
        case 'p':
            word = people[pi];
            break;
        case 'q':
            word = people[qi];
            break;
        case 'l':
            word = pick(rng, places, N_OF(places));
            break;
        case 'c':
            word = pick(rng, cities, N_OF(cities));
            break;
        case 'a':
            word = pick(rng, activities, N_OF(activities));
            break;
        case 'i':
            word = pick(rng, infinitives, N_OF(infinitives));
            break;
        case 'o':
            word = pick(rng, objects, N_OF(objects));
            break;
        case 'f':
            word = pick(rng, foods, N_OF(foods));
            break;
        case 'e':
            word = pick(rng, pets, N_OF(pets));
            break;
        case 'n':
            word = pick(rng, pet_names, N_OF(pet_names));
            break;
        case 'j':
            word = pick(rng, jobs, N_OF(jobs));
            break;
        case 'm':
            word = pick(rng, companies, N_OF(companies));
            break;
        case 't':
            word = pick(rng, topics, N_OF(topics));
            break;
        case 'w':
            word = pick(rng, past_times, N_OF(past_times));
            break;
        case 'u':
            word = pick(rng, future_times, N_OF(future_times));
            break;
        case 'd':
            word = pick(rng, adjectives, N_OF(adjectives));
            break;
        case 'v':
            word = pick(rng, feelings, N_OF(feelings));
            break;
        case 'y':
            word = pick(rng, weekdays, N_OF(weekdays));
            break;
        case 'k':
            word = pick(rng, clocks, N_OF(clocks));
            break;
        case 'b':
            word = pick(rng, books, N_OF(books));
            break;
        case 'h':
            word = pick(rng, hobbies, N_OF(hobbies));
            break;
        case 's':
            word = pick(rng, shops, N_OF(shops));
            break;
        case 'r':
            snprintf(num, sizeof num, "%u", (unsigned)(2 + mg_corpus_rand(rng) % 7));
            word = num;
            break;
        default:
            buf[len++] = '%';
            if (len + 1 < cap)
                buf[len++] = *t;
            continue;
        }
        size_t wl = strlen(word);
        if (wl > cap - 1 - len)
            wl = cap - 1 - len;
        memcpy(buf + len, word, wl);
        len += wl;
    }
    buf[len] = '\0';
    return len;
}

size_t mg_corpus_sentence(uint64_t *rng, char *buf, size_t cap)
{
    size_t len = expand(pick(rng, sentences, N_OF(sentences)), rng, buf, cap);
    /* One memory in three carries a second sentence: lengths vary like
     * real notes (about 40 to 250 bytes). */
    if (mg_corpus_rand(rng) % 3 == 0 && len + 2 < cap) {
        buf[len++] = ' ';
        len += expand(pick(rng, sentences, N_OF(sentences)), rng, buf + len, cap - len);
    }
    return len;
}

size_t mg_corpus_question(uint64_t *rng, char *buf, size_t cap)
{
    return expand(pick(rng, questions, N_OF(questions)), rng, buf, cap);
}

/* ---- layout ---- */

static bool id_char_ok(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '.' || ch == ':' || ch == '@' || ch == '-';
}

int mg_corpus_new(const mg_corpus_config *cfg, mg_corpus **out, mg_error *err)
{
    if (cfg->cubes == 0)
        return mg_error_set(err, MG_EINVAL, "the corpus needs at least one cube");
    if (!(cfg->zipf >= 0.0) || cfg->zipf > 10.0)
        return mg_error_set(err, MG_EINVAL, "zipf exponent must be 0..10");
    const char *prefix = cfg->prefix ? cfg->prefix : "bench";
    for (const char *p = prefix; *p; p++)
        if (!id_char_ok(*p))
            return mg_error_set(err, MG_EINVAL, "cube prefix \"%s\": only [A-Za-z0-9_.:@-] allowed",
                                prefix);
    if (strlen(prefix) + 24 > 128)
        return mg_error_set(err, MG_EINVAL, "cube prefix longer than 100 bytes");

    mg_corpus *c = calloc(1, sizeof *c);
    if (c == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    c->ncubes = cfg->cubes;
    c->seed = cfg->seed;
    c->ids = calloc(c->ncubes, sizeof *c->ids);
    c->sizes = calloc(c->ncubes, sizeof *c->sizes);
    c->first = calloc(c->ncubes, sizeof *c->first);
    c->cumulative = calloc(c->ncubes, sizeof *c->cumulative);
    if (c->ids == NULL || c->sizes == NULL || c->first == NULL || c->cumulative == NULL)
        goto err_oom;
    double total = 0;
    for (size_t i = 0; i < c->ncubes; i++) {
        total += pow((double)(i + 1), -cfg->zipf);
        c->cumulative[i] = total;
        char id[160];
        snprintf(id, sizeof id, "%s-c%zu", prefix, i);
        if ((c->ids[i] = strdup(id)) == NULL)
            goto err_oom;
    }
    for (size_t i = 0; i < c->ncubes; i++)
        c->cumulative[i] /= total;
    c->cumulative[c->ncubes - 1] = 1.0;

    /* Sizes: each cube its share (at least one memory when there are enough
     * to go round), the remainder to the largest cubes. */
    size_t assigned = 0;
    bool at_least_one = cfg->memories >= c->ncubes;
    for (size_t i = 0; i < c->ncubes; i++) {
        double share =
            (c->cumulative[i] - (i ? c->cumulative[i - 1] : 0.0)) * (double)cfg->memories;
        size_t n = (size_t)floor(share);
        if (at_least_one && n == 0)
            n = 1;
        c->sizes[i] = n;
        assigned += n;
    }
    for (size_t i = 0; assigned < cfg->memories; i = (i + 1) % c->ncubes) {
        c->sizes[i]++;
        assigned++;
    }
    /* Rounding up to one memory per cube may overshoot: take it back from
     * the largest. */
    for (size_t i = 0; assigned > cfg->memories; i = (i + 1) % c->ncubes) {
        if (c->sizes[i] > 1) {
            c->sizes[i]--;
            assigned--;
        }
    }
    size_t first = 0;
    for (size_t i = 0; i < c->ncubes; i++) {
        c->first[i] = first;
        first += c->sizes[i];
    }
    c->memories = first;
    *out = c;
    return MG_OK;

err_oom:
    mg_corpus_free(c);
    return mg_error_set(err, MG_ENOMEM, "out of memory");
}

void mg_corpus_free(mg_corpus *c)
{
    if (c == NULL)
        return;
    if (c->ids != NULL)
        for (size_t i = 0; i < c->ncubes; i++)
            free(c->ids[i]);
    free(c->ids);
    free(c->sizes);
    free(c->first);
    free(c->cumulative);
    free(c);
}

size_t mg_corpus_cubes(const mg_corpus *c)
{
    return c->ncubes;
}

const char *mg_corpus_cube_id(const mg_corpus *c, size_t i)
{
    return c->ids[i];
}

size_t mg_corpus_cube_size(const mg_corpus *c, size_t i)
{
    return c->sizes[i];
}

size_t mg_corpus_memory(const mg_corpus *c, size_t k, size_t *cube, char *buf, size_t cap)
{
    /* The cube whose range holds k: the last with first <= k. */
    size_t lo = 0, hi = c->ncubes;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->first[mid] <= k)
            lo = mid;
        else
            hi = mid;
    }
    while (lo + 1 < c->ncubes && c->sizes[lo] == 0)
        lo++;
    *cube = lo;
    uint64_t rng = mg_corpus_mix(c->seed ^ 0x6d656d6f7279ULL, (uint64_t)k);
    return mg_corpus_sentence(&rng, buf, cap);
}

size_t mg_corpus_pick_cube(const mg_corpus *c, uint64_t r)
{
    double u = (double)(r >> 11) * 0x1.0p-53;
    size_t lo = 0, hi = c->ncubes - 1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->cumulative[mid] > u)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}
